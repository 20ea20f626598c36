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
	cases := []struct {
		name   string
		kind   byte
		fields []string
		data   string
		want   envelope
	}{
		{name: "publication", kind: kindPublication, fields: []string{""}, data: `{"x":1}`,
			want: envelope{kind: kindPublication, origin: "node-1", data: []byte(`{"x":1}`)}},
		{name: "publication with offset", kind: kindPublication, fields: []string{"1700000000000-12"}, data: "a:b:c",
			want: envelope{kind: kindPublication, origin: "node-1", offset: "1700000000000-12", data: []byte("a:b:c")}},
		{name: "broadcast, empty data", kind: kindBroadcast,
			want: envelope{kind: kindBroadcast, origin: "node-1", data: []byte{}}},
		{name: "private with odd ids", kind: kindPrivate, fields: []string{"to:1\n", "from 2"}, data: "12:34",
			want: envelope{kind: kindPrivate, origin: "node-1", to: "to:1\n", by: "from 2", data: []byte("12:34")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := decode(string(encode(tc.kind, "node-1", []byte(tc.data), tc.fields...)))
			if err != nil {
				t.Fatal(err)
			}
			if got.kind != tc.want.kind || got.origin != tc.want.origin || got.offset != tc.want.offset ||
				got.to != tc.want.to || got.by != tc.want.by || string(got.data) != string(tc.want.data) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestEnvelopeRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "1", "2P1:a", "1X1:a", "1P", "1P9:a", "1Pa:b", "1P1:a", "1M1:a1:b", "1P99999999999:a"} {
		if _, err := decode(p); !errors.Is(err, errBadEnvelope) {
			t.Errorf("decode(%q) = %v, want errBadEnvelope", p, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(string(encode(kindPublication, "n", []byte("d"), "1-1")))
	f.Add(string(encode(kindPrivate, "n", []byte("d"), "a", "b")))
	f.Fuzz(func(t *testing.T, p string) { _, _ = decode(p) })
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
