package wsread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// clientFrame builds a masked frame as a client sends it.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	var b []byte
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b = append(b, b0)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range payload {
		b[start+i] ^= key[i&3]
	}
	return b
}

// recorder records what the parser hands over, as text.
type recorder struct {
	events  []string
	stopAt  int // stop (return false) at this event number, when > 0
	stopped bool
}

func (r *recorder) add(s string) bool {
	r.events = append(r.events, s)
	if r.stopAt > 0 && len(r.events) >= r.stopAt {
		r.stopped = true
		return false
	}
	return true
}

func (r *recorder) OnFrame(byte, int) bool { return true }

func (r *recorder) OnMessage(op byte, p []byte) bool {
	return r.add(fmt.Sprintf("msg %d %q", op, p))
}

func (r *recorder) OnControl(op byte, p []byte) bool {
	return r.add(fmt.Sprintf("ctl %d %q", op, p))
}

// feedChunks feeds in in pieces of the given sizes (the last piece takes the
// rest) and returns the events and the first error.
func feedChunks(t testing.TB, in []byte, max int, sizes ...int) ([]string, error) {
	t.Helper()
	var p Parser
	defer p.Release()
	var r recorder
	data := append([]byte(nil), in...)
	for len(data) > 0 {
		n := len(data)
		if len(sizes) > 0 {
			n = min(sizes[0], n)
			if len(sizes) > 1 {
				sizes = sizes[1:]
			}
		}
		more, err := p.Feed(data[:n], max, &r)
		if err != nil {
			return r.events, err
		}
		if !more {
			return r.events, nil
		}
		data = data[n:]
	}
	return r.events, nil
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func TestParserValid(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("x"), 70000)
	mid := bytes.Repeat([]byte("é"), 200) // 400 bytes, 16-bit length
	tests := []struct {
		name string
		in   []byte
		want []string
	}{
		{"text", clientFrame(true, OpText, []byte("hello")), []string{`msg 1 "hello"`}},
		{"empty text", clientFrame(true, OpText, nil), []string{`msg 1 ""`}},
		{"binary, invalid UTF-8 allowed", clientFrame(true, OpBinary, []byte{0xff, 0xfe}), []string{`msg 2 "\xff\xfe"`}},
		{"16-bit length", clientFrame(true, OpText, mid), []string{fmt.Sprintf("msg 1 %q", mid)}},
		{"64-bit length", clientFrame(true, OpBinary, big), []string{fmt.Sprintf("msg 2 %q", big)}},
		{"two messages", cat(clientFrame(true, OpText, []byte("a")), clientFrame(true, OpText, []byte("b"))),
			[]string{`msg 1 "a"`, `msg 1 "b"`}},
		{"fragmented with a ping in between",
			cat(clientFrame(false, OpText, []byte("hel")), clientFrame(true, OpPing, []byte("p")),
				clientFrame(false, OpContinuation, []byte("lo ")), clientFrame(true, OpContinuation, []byte("wörld"))),
			[]string{`ctl 9 "p"`, `msg 1 "hello wörld"`}},
		{"UTF-8 split across fragments", cat(clientFrame(false, OpText, []byte{0xc3}), clientFrame(true, OpContinuation, []byte{0xa9})),
			[]string{`msg 1 "é"`}},
		{"pong", clientFrame(true, OpPong, []byte("x")), []string{`ctl 10 "x"`}},
		{"close without payload", clientFrame(true, OpClose, nil), []string{`ctl 8 ""`}},
		{"close 1000", clientFrame(true, OpClose, closePayload(1000, "bye")), []string{`ctl 8 "\x03\xe8bye"`}},
		{"close 4000", clientFrame(true, OpClose, closePayload(4000, "")), []string{`ctl 8 "\x0f\xa0"`}},
		{"125-byte ping", clientFrame(true, OpPing, bytes.Repeat([]byte("p"), 125)), []string{fmt.Sprintf("ctl 9 %q", bytes.Repeat([]byte("p"), 125))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := feedChunks(t, tt.in, 1<<20)
			if err != nil || !equal(got, tt.want) {
				t.Fatalf("whole: got %q, %v; want %q", short(got), err, short(tt.want))
			}
			// Every split point, and byte by byte, must give the same result.
			for cut := 1; cut < len(tt.in) && cut < 300; cut++ {
				got, err := feedChunks(t, tt.in, 1<<20, cut, len(tt.in))
				if err != nil || !equal(got, tt.want) {
					t.Fatalf("split at %d: got %q, %v", cut, short(got), err)
				}
			}
			if len(tt.in) < 5000 {
				got, err = feedChunks(t, tt.in, 1<<20, 1)
				if err != nil || !equal(got, tt.want) {
					t.Fatalf("byte by byte: got %q, %v", short(got), err)
				}
			}
		})
	}
}

func TestParserViolations(t *testing.T) {
	t.Parallel()
	raw := func(b ...byte) []byte { return b }
	tests := []struct {
		name string
		in   []byte
		max  int
		want *Error
	}{
		// The frame that crashed gws v1.8.9: 14 bytes, 64-bit length 2^64-1.
		{"64-bit length with the top bit set", raw(0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4), 1 << 16, ErrLengthTopBit},
		{"top bit alone", raw(0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4), 1 << 16, ErrLengthTopBit},
		{"64-bit length over the limit", raw(0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4), 1 << 16, ErrTooBig},
		{"16-bit length over the limit", clientFrame(true, OpText, make([]byte, 300)), 200, ErrTooBig},
		{"7-bit length over the limit", clientFrame(true, OpText, make([]byte, 100)), 99, ErrTooBig},
		{"fragments over the limit", cat(clientFrame(false, OpText, make([]byte, 60)), clientFrame(true, OpContinuation, make([]byte, 60))), 100, ErrTooBig},
		{"16-bit length not minimal", raw(0x81, 0xFE, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'), 1 << 16, ErrLengthEncoding},
		{"64-bit length not minimal", raw(0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4), 1 << 16, ErrLengthEncoding},
		{"unmasked", raw(0x81, 0x01, 'a'), 1 << 16, ErrUnmasked},
		{"RSV1", raw(0xC1, 0x80, 1, 2, 3, 4), 1 << 16, ErrReservedBits},
		{"RSV3", raw(0x91, 0x80, 1, 2, 3, 4), 1 << 16, ErrReservedBits},
		{"opcode 3", raw(0x83, 0x80, 1, 2, 3, 4), 1 << 16, ErrReservedOpcode},
		{"opcode 0xB", raw(0x8B, 0x80, 1, 2, 3, 4), 1 << 16, ErrReservedOpcode},
		{"fragmented ping", clientFrame(false, OpPing, nil), 1 << 16, ErrControlFragm},
		{"126-byte ping", raw(0x89, 0xFE, 0, 126), 1 << 16, ErrControlLength},
		{"continuation first", clientFrame(true, OpContinuation, []byte("x")), 1 << 16, ErrContinuation},
		{"text inside a fragmented message", cat(clientFrame(false, OpText, []byte("a")), clientFrame(true, OpText, []byte("b"))), 1 << 16, ErrInterleaved},
		{"invalid UTF-8 text", clientFrame(true, OpText, []byte{'a', 0xff}), 1 << 16, ErrInvalidUTF8},
		{"invalid UTF-8 across fragments", cat(clientFrame(false, OpText, []byte{0xc3}), clientFrame(true, OpContinuation, []byte{'a'})), 1 << 16, ErrInvalidUTF8},
		{"surrogate in text", clientFrame(true, OpText, []byte{0xed, 0xa0, 0x80}), 1 << 16, ErrInvalidUTF8},
		{"close with one byte", clientFrame(true, OpClose, []byte{3}), 1 << 16, ErrCloseLength},
		{"close 1005", clientFrame(true, OpClose, closePayload(1005, "")), 1 << 16, ErrCloseCode},
		{"close 999", clientFrame(true, OpClose, closePayload(999, "")), 1 << 16, ErrCloseCode},
		{"close 5000", clientFrame(true, OpClose, closePayload(5000, "")), 1 << 16, ErrCloseCode},
		{"close reason not UTF-8", clientFrame(true, OpClose, closePayload(1000, "\xff")), 1 << 16, ErrCloseReason},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, sizes := range [][]int{{len(tt.in)}, {1}, {3, len(tt.in)}} {
				_, err := feedChunks(t, tt.in, tt.max, sizes...)
				if !errors.Is(err, tt.want) {
					t.Fatalf("chunks %v: err = %v, want %v", sizes, err, tt.want)
				}
			}
		})
	}
}

// TestParserRejectsBeforeBuffering: a header announcing a huge payload is
// refused from the header alone, and one announcing an allowed payload that
// never comes does not make the parser reserve the whole of it.
func TestParserRejectsBeforeBuffering(t *testing.T) {
	t.Parallel()
	var p Parser
	defer p.Release()
	var r recorder
	hdr := []byte{0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4} // 1 MiB
	if _, err := p.Feed(append([]byte(nil), hdr...), 1<<20, &r); err != nil {
		t.Fatal(err)
	}
	if c := cap(p.pend); c > 4096 {
		t.Fatalf("a bare header made the parser reserve %d bytes", c)
	}
	if p.Idle() {
		t.Fatal("parser idle with a frame pending")
	}
	var q Parser
	if _, err := q.Feed(append([]byte(nil), hdr...), 1<<19, &r); !errors.Is(err, ErrTooBig) {
		t.Fatalf("1 MiB frame against a 512 KiB limit: %v", err)
	}
}

func TestParserStop(t *testing.T) {
	t.Parallel()
	in := cat(clientFrame(true, OpText, []byte("a")), clientFrame(true, OpText, []byte("b")), clientFrame(true, OpText, []byte("c")))
	var p Parser
	r := recorder{stopAt: 2}
	more, err := p.Feed(in, 100, &r)
	if more || err != nil || len(r.events) != 2 {
		t.Fatalf("more=%v err=%v events=%q: the parser must stop when the handler says so", more, err, r.events)
	}
}

func TestParserIdleAfterMessages(t *testing.T) {
	t.Parallel()
	in := cat(clientFrame(false, OpText, []byte("ab")), clientFrame(true, OpContinuation, []byte("cd")))
	var p Parser
	var r recorder
	for i := range in {
		if _, err := p.Feed(in[i:i+1], 100, &r); err != nil {
			t.Fatal(err)
		}
	}
	if !p.Idle() || p.msg != nil || p.pend != nil {
		t.Fatalf("parser holds buffers after complete messages: %+v", p)
	}
	if !equal(r.events, []string{`msg 1 "abcd"`}) {
		t.Fatalf("events %q", r.events)
	}
}

func TestValidCloseCode(t *testing.T) {
	t.Parallel()
	for code, want := range map[uint16]bool{0: false, 999: false, 1000: true, 1001: true, 1003: true, 1004: false, 1005: false,
		1006: false, 1007: true, 1011: true, 1014: true, 1015: false, 1016: false, 2999: false, 3000: true, 4999: true, 5000: false} {
		if ValidCloseCode(code) != want {
			t.Errorf("ValidCloseCode(%d) = %v", code, !want)
		}
	}
}

func TestUnmask(t *testing.T) {
	t.Parallel()
	key := [4]byte{1, 2, 3, 4}
	for n := range 40 {
		b := bytes.Repeat([]byte{0xAA}, n)
		unmask(b, key)
		for i := range b {
			if b[i] != 0xAA^key[i%4] {
				t.Fatalf("len %d byte %d = %#x", n, i, b[i])
			}
		}
	}
}

func BenchmarkParserSmallMessages(b *testing.B) {
	msg := clientFrame(true, OpText, []byte(`{"type":"publish","channel":"prices","data":{"p":1.5}}`))
	buf := bytes.Repeat(msg, 64)
	work := make([]byte, len(buf))
	var p Parser
	var h nopHandler
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		copy(work, buf)
		if _, err := p.Feed(work, 1<<16, h); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/msg")
}

type nopHandler struct{}

func (nopHandler) OnFrame(byte, int) bool      { return true }
func (nopHandler) OnMessage(byte, []byte) bool { return true }
func (nopHandler) OnControl(byte, []byte) bool { return true }

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func short(s []string) string {
	j := strings.Join(s, " | ")
	if len(j) > 200 {
		return j[:200] + "…"
	}
	return j
}
