package redisbroker

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	seqd := func(kind byte, seq uint64, offset *string, data string) string {
		b := appendSeqHead(nil, kind, "node-1", 1700000000000000000, 7, seq)
		if offset != nil {
			b = appendField(b, *offset)
		}
		return string(append(b, data...))
	}
	empty, off := "", "1700000000000-12"
	cases := []struct {
		name    string
		payload string
		want    envelope
	}{
		{name: "publication", payload: seqd(kindPublication, 1, &empty, `{"x":1}`),
			want: envelope{kind: kindPublication, origin: "node-1", epoch: 1700000000000000000, stream: 7, seq: 1, data: `{"x":1}`}},
		{name: "publication with offset", payload: seqd(kindPublication, 18446744073709551615, &off, "a:b:c"),
			want: envelope{kind: kindPublication, origin: "node-1", epoch: 1700000000000000000, stream: 7, seq: 18446744073709551615, offset: off, data: "a:b:c"}},
		{name: "broadcast, empty data", payload: seqd(kindBroadcast, 3, nil, ""),
			want: envelope{kind: kindBroadcast, origin: "node-1", epoch: 1700000000000000000, stream: 7, seq: 3}},
		{name: "announcement", payload: seqd(kindAnnounce, 9, nil, ""),
			want: envelope{kind: kindAnnounce, origin: "node-1", epoch: 1700000000000000000, stream: 7, seq: 9}},
		{name: "void", payload: seqd(kindVoid, 2, nil, ""),
			want: envelope{kind: kindVoid, origin: "node-1", epoch: 1700000000000000000, stream: 7, seq: 2}},
		{name: "private with odd ids", payload: string(encode(kindPrivate, "node-1", []byte("12:34"), "to:1\n", "from 2")),
			want: envelope{kind: kindPrivate, origin: "node-1", to: "to:1\n", by: "from 2", data: "12:34"}},
		{name: "sync request", payload: string(encode(kindSync, "node-1", nil)),
			want: envelope{kind: kindSync, origin: "node-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := decode(tc.payload)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestEnvelopeHeadFitsHeadroom(t *testing.T) {
	t.Parallel()
	for _, origin := range []string{"", "n", "a-rather-long-instance-identifier-0123456789"} {
		h := appendField(appendSeqHead(nil, kindPublication, origin, ^uint64(0), ^uint64(0), ^uint64(0)), "")
		if len(h) > maxSeqHead(origin) {
			t.Errorf("origin %q: head %d bytes, headroom %d", origin, len(h), maxSeqHead(origin))
		}
	}
}

func TestEnvelopeRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "2", "1P1:a", "2X1:a", "2P", "2P9:a", "2Pa:b", "2P1:a", "2M1:a1:b",
		"2P99999999999:a", "2B1:a1:11:11:0", "2B1:a1:11:1", "2B1:a0:1:11:1", "2B1:a21:1000000000000000000001:11:1",
		"2B1:a1:x1:11:1"} {
		if _, err := decode(p); !errors.Is(err, errBadEnvelope) {
			t.Errorf("decode(%q) = %v, want errBadEnvelope", p, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(string(append(appendField(appendSeqHead(nil, kindPublication, "n", 1, 2, 3), "1-1"), 'd')))
	f.Add(string(encode(kindPrivate, "n", []byte("d"), "a", "b")))
	f.Fuzz(func(t *testing.T, p string) {
		e, err := decode(p)
		if err == nil && sequenced(e.kind) && e.seq == 0 {
			t.Fatalf("decoded seq 0 from %q", p)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		cfg   Config
		field string // "" = valid
	}{
		{name: "zero value with URL", cfg: Config{URL: "redis://127.0.0.1:6379/0"}},
		{name: "no URL", cfg: Config{}, field: "URL"},
		{name: "bad URL", cfg: Config{URL: "http://x"}, field: "URL"},
		{name: "heartbeat too slow", cfg: Config{URL: "redis://x", InstanceTTL: 2 * time.Second, HeartbeatInterval: 2 * time.Second}, field: "HeartbeatInterval"},
		{name: "conn refresh too slow", cfg: Config{URL: "redis://x", ConnTTL: 2 * time.Second, ConnRefresh: 3 * time.Second}, field: "ConnRefresh"},
		{name: "too many pubsub conns", cfg: Config{URL: "redis://x", PubSubConns: 1000}, field: "PubSubConns"},
		{name: "negative history size", cfg: Config{URL: "redis://x", History: []HistoryRule{{Prefix: "a", Size: -1}}}, field: "History[0].Size"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !containsWord(err.Error(), tc.field) {
				t.Fatalf("Validate() = %v, want an ErrInvalidConfig naming %s", err, tc.field)
			}
		})
	}
}

func containsWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i:i+len(w)] == w {
			return true
		}
	}
	return false
}

func TestHistoryRuleLongestPrefixWins(t *testing.T) {
	t.Parallel()
	c := Config{URL: "redis://x", History: []HistoryRule{{Prefix: "a.", Size: 1}, {Prefix: "a.b.", Size: 2}}}.withDefaults()
	if r := c.rule("a.b.c"); r == nil || r.Size != 2 {
		t.Fatalf("rule(a.b.c) = %+v", r)
	}
	if r := c.rule("a.x"); r == nil || r.Size != 1 {
		t.Fatalf("rule(a.x) = %+v", r)
	}
	if r := c.rule("b"); r != nil {
		t.Fatalf("rule(b) = %+v", r)
	}
}
