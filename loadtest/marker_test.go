package loadtest

import (
	"encoding/json"
	"strconv"
	"testing"
)

func TestFindMarker(t *testing.T) {
	t.Parallel()
	want := marker{pub: 2, ch: 17, seq: 1742, ts: 1718000000123456789}
	payload := string(appendPayload(nil, want, 128))
	quoted, _ := json.Marshal(payload)
	tests := []struct {
		name  string
		frame string
		ok    bool
		want  marker
	}{
		{"bare payload", payload, true, want},
		{"shardhub broadcast", `{"type":"message","data":` + payload + `}`, true, want},
		{"shardhub publication", `{"type":"message","channel":"lt-17","offset":"1-2","data":` + payload + `}`, true, want},
		{"re-encoded as a JSON string", `{"event":"msg","body":` + string(quoted) + `}`, true, want},
		{"plain text relay", "user42: " + "LT1:2:17:1742:1718000000123456789 hello", true, want},
		{"false start then marker", `{"note":"LT1:x","data":` + payload + `}`, true, want},
		{"truncated marker", `LT1:2:17:1742`, false, marker{}},
		{"no marker", `{"type":"welcome","conn":"abc-1"}`, false, marker{}},
		{"empty", ``, false, marker{}},
		{"prefix only", `LT1:`, false, marker{}},
		{"bad separator", `LT1:2;17:1742:99`, false, marker{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := findMarker([]byte(tt.frame))
			if ok != tt.ok || got != tt.want {
				t.Errorf("findMarker(%.60q) = %+v, %v; want %+v, %v", tt.frame, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestAppendPayload(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 10, 40, 64, 128, 1000, 70000} {
		p := appendPayload(nil, marker{pub: 1, ch: 2, seq: 3, ts: 4}, size)
		if !json.Valid(p) {
			t.Fatalf("size %d: payload %q is not JSON", size, p)
		}
		if min := len(`{"lt":"LT1:1:2:3:4"}`); size > min+len(`,"pad":""`) && len(p) != size {
			t.Errorf("size %d: got %d bytes", size, len(p))
		}
	}
}

func TestFindMarkerAllocs(t *testing.T) {
	frame := []byte(`{"type":"message","data":` + string(appendPayload(nil, marker{1, 2, 3, 4}, 256)) + `}`)
	if n := testing.AllocsPerRun(100, func() { findMarker(frame) }); n != 0 {
		t.Errorf("findMarker allocates %v times per call", n)
	}
}

func FuzzFindMarker(f *testing.F) {
	f.Add([]byte(`{"type":"message","data":{"lt":"LT1:0:0:1:1718000000000000000","pad":"xx"}}`))
	f.Add([]byte(`LT1:99999999999999999999:1:2:3`))
	f.Add([]byte(`LT1:LT1:1:2:3:4`))
	f.Add([]byte("\x00LT1:\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := findMarker(b)
		if !ok {
			return
		}
		// Whatever was found must re-encode to a marker that parses the same.
		again, ok := findMarker(appendMarker(nil, m))
		if !ok || again != m {
			t.Fatalf("%+v did not round-trip (%+v)", m, again)
		}
		if s := strconv.FormatUint(m.seq, 10); len(s) > 19 {
			t.Fatalf("seq %s too long", s)
		}
	})
}
