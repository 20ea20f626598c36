package engine

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestJSONCodecDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want Request
		code ErrorCode
	}{
		{name: "subscribe", in: `{"type":"subscribe","channel":"a","id":1}`, want: Request{Type: RequestSubscribe, Channel: "a", ID: []byte("1")}},
		{name: "subscribe since", in: `{"type":"subscribe","channel":"a","since":"5-0"}`, want: Request{Type: RequestSubscribe, Channel: "a", Since: "5-0", HasSince: true}},
		{name: "publish", in: `{"type":"publish","channel":"a","data":{"k":[1,2]}}`, want: Request{Type: RequestPublish, Channel: "a", Data: []byte(`{"k":[1,2]}`)}},
		{name: "send string id", in: `{"type":"send","to":"x-1","data":"hi","id":"abc"}`, want: Request{Type: RequestSend, To: "x-1", Data: []byte(`"hi"`), ID: []byte(`"abc"`)}},
		{name: "not json", in: `nope`, code: CodeBadJSON},
		{name: "wrong field type", in: `{"type":"subscribe","channel":5}`, code: CodeBadJSON},
		{name: "unknown", in: `{"type":"x"}`, code: CodeUnknownType},
		{name: "bool id", in: `{"type":"subscribe","channel":"a","id":true}`, code: CodeBadRequest},
		{name: "null data", in: `{"type":"publish","channel":"a"}`, code: CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got Request
			err := JSONCodec{}.Decode([]byte(tt.in), &got)
			if tt.code != "" {
				if err == nil || ErrorCodeOf(err) != tt.code {
					t.Fatalf("err = %v, want code %s", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.want.Type || got.Channel != tt.want.Channel || got.To != tt.want.To ||
				string(got.Data) != string(tt.want.Data) || string(got.ID) != string(tt.want.ID) ||
				got.Since != tt.want.Since || got.HasSince != tt.want.HasSince {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestJSONCodecEncodesValidJSON(t *testing.T) {
	t.Parallel()
	c := JSONCodec{}
	rec := true
	outs := [][]byte{
		c.AppendWelcome(nil, `we"ird\id`),
		c.AppendPublication(nil, "ch\n", "1-0", []byte(`{"a":1}`)),
		c.AppendPublication(nil, "ch", "", []byte("plain \x00 text\xff")),
		c.AppendBroadcast(nil, []byte("  [1, 2] ")),
		c.AppendPrivate(nil, "", []byte(`"x"`)),
		c.AppendReply(nil, &Reply{Type: ReplyError, ID: []byte(`"r"`), Code: CodeBadJSON, Reason: "bad \"quote\"\tand tab"}),
		c.AppendReply(nil, &Reply{Type: ReplySubscribed, Channel: "c", Offset: "9-1", Recovered: &rec}),
	}
	for _, out := range outs {
		if !json.Valid(out) {
			t.Fatalf("invalid JSON: %s", out)
		}
	}
	var v struct{ Data string }
	if err := json.Unmarshal(outs[2], &v); err != nil || v.Data != "plain \x00 text\uFFFD" {
		t.Fatalf("non-JSON data should be a JSON string: %s (%v)", outs[2], err)
	}
	if got := string(outs[3]); !strings.Contains(got, `"data":[1, 2]}`) {
		t.Fatalf("JSON data should be embedded verbatim (trimmed): %s", got)
	}
}

func FuzzJSONCodecDecode(f *testing.F) {
	for _, seed := range []string{
		`{"type":"subscribe","channel":"news","id":1}`,
		`{"type":"unsubscribe","channel":"news"}`,
		`{"type":"publish","channel":"news","data":{"headline":"hi"},"id":3}`,
		`{"type":"send","to":"9f3c-7","data":"psst","id":"x"}`,
		`{"type":"subscribe","channel":"prices","since":"1718000000000-3"}`,
		`{"type":"bogus"}`, `[]`, `{`, `null`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var req Request
		err := JSONCodec{}.Decode(in, &req)
		if err != nil {
			if ErrorCodeOf(err) == "" {
				t.Fatal("error without a code")
			}
			return
		}
		if req.Type < RequestSubscribe || req.Type > RequestSend {
			t.Fatalf("accepted request of type %d", req.Type)
		}
		// Whatever was accepted must re-encode as valid JSON.
		out := JSONCodec{}.AppendPublication(nil, req.Channel, req.Since, req.Data)
		if !json.Valid(out) {
			t.Fatalf("re-encoded invalid JSON: %q", out)
		}
	})
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "\x00\x1f\x7f", "é日本", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q encoded as invalid JSON %q: %v", s, out, err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("round trip %q → %q", s, back)
		}
	})
}
