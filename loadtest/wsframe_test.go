package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
)

// chunkConn is a frameConn over a byte stream that its reads return in the
// sizes of chunks (cycled; 0 means "nothing now"), recording what the reader
// delivers and writes.
type chunkConn struct {
	in     []byte
	chunks []int
	k      int
	msgs   []string
	ctrl   []string // control frames written, "op:payload"
}

func (c *chunkConn) read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.chunks) > 0 {
		n = min(n, c.chunks[c.k%len(c.chunks)])
		c.k++
	}
	n = copy(p[:n], c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *chunkConn) message(p []byte, _ int64) { c.msgs = append(c.msgs, string(p)) }

func (c *chunkConn) writeFrame(op byte, p []byte) error {
	c.ctrl = append(c.ctrl, fmt.Sprintf("%d:%q", op, p))
	return nil
}

// readAllFrames runs a frameReader over c with a read buffer of bufLen bytes
// until the stream ends or fails, and returns how it ended.
func readAllFrames(tb testing.TB, c *chunkConn, bufLen int) string {
	tb.Helper()
	var r frameReader
	defer r.release()
	buf := make([]byte, bufLen)
	for idle := 0; idle < 1000; {
		before := len(c.in)
		_, err := r.readOnce(c, buf)
		if err != nil {
			return endClass(err)
		}
		if len(c.in) == before {
			idle++ // a read of nothing: the stream goes on
		} else {
			idle = 0
		}
	}
	tb.Fatal("the reader made no progress")
	return ""
}

// endClass names how a connection's reads ended, in terms both readers share.
func endClass(err error) string {
	var ce closeError
	switch {
	case errors.As(err, &ce):
		return fmt.Sprintf("close %d", ce.code)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "protocol error"
}

// discardConn is a net.Conn whose writes are recorded and whose reads come
// from r: the transport of a wsConn under test.
type discardConn struct {
	net.Conn
	r   io.Reader
	out bytes.Buffer
}

func (d *discardConn) Read(p []byte) (int, error)       { return d.r.Read(p) }
func (d *discardConn) Write(p []byte) (int, error)      { return d.out.Write(p) }
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }

// blockingReader reads stream with the goroutine reader (wsConn.next) and a
// bufio buffer of bufLen bytes: the reference the epoll reader must agree with.
func blockingReader(stream []byte, bufLen int) (msgs, ctrl []string, end string) {
	dc := &discardConn{r: bytes.NewReader(stream)}
	ws := &wsConn{nc: dc, br: bufio.NewReaderSize(dc, bufLen)}
	for {
		_, p, err := ws.next()
		if err != nil {
			end = endClass(err)
			break
		}
		msgs = append(msgs, string(p))
	}
	out := bytes.NewReader(dc.out.Bytes())
	for {
		op, p, err := readClientFrame(out)
		if err != nil {
			break
		}
		ctrl = append(ctrl, fmt.Sprintf("%d:%q", op, p))
	}
	return msgs, ctrl, end
}

func TestFrameReader(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("b"), 70000)
	masked := func(p []byte) []byte { // a server frame masked (servers must not; the reader copes)
		f := []byte{0x81, 0x80 | byte(len(p)), 1, 2, 3, 4}
		q := append([]byte(nil), p...)
		maskBytes(q, [4]byte{1, 2, 3, 4})
		return append(f, q...)
	}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name   string
		stream []byte
		msgs   []string
		ctrl   []string
		end    string
	}{
		{"small text", serverFrame(true, opText, []byte("hello")), []string{"hello"}, nil, "eof"},
		{"binary", serverFrame(true, opBinary, []byte{0, 1, 2}), []string{"\x00\x01\x02"}, nil, "eof"},
		{"16-bit length", serverFrame(true, opText, bytes.Repeat([]byte("m"), 300)), []string{strings.Repeat("m", 300)}, nil, "eof"},
		{"64-bit length past the buffer", serverFrame(true, opText, big), []string{string(big)}, nil, "eof"},
		{"fragmented", cat(serverFrame(false, opText, []byte("ab")), serverFrame(false, opContinuation, []byte("cd")),
			serverFrame(true, opContinuation, []byte("ef"))), []string{"abcdef"}, nil, "eof"},
		{"ping inside a fragmented message", cat(serverFrame(false, opText, []byte("ab")), serverFrame(true, opPing, []byte("p")),
			serverFrame(true, opContinuation, []byte("cd"))), []string{"abcd"}, []string{`10:"p"`}, "eof"},
		{"big fragments", cat(serverFrame(false, opBinary, big[:1000]), serverFrame(true, opContinuation, big[1000:])),
			[]string{string(big)}, nil, "eof"},
		{"pong skipped", cat(serverFrame(true, opPong, nil), serverFrame(true, opText, []byte("x"))), []string{"x"}, nil, "eof"},
		{"masked by the server", masked([]byte("secret")), []string{"secret"}, nil, "eof"},
		{"close with a code", cat(serverFrame(true, opText, []byte("1")), serverFrame(true, opClose, []byte{0x03, 0xF5, 'x'}),
			serverFrame(true, opText, []byte("never"))), []string{"1"}, []string{`8:"\x03\xf5"`}, "close 1013"},
		{"close without a code", serverFrame(true, opClose, nil), nil, []string{`8:""`}, "close 1005"},
		{"reserved bits", []byte{0xC1, 0x01, 'x'}, nil, nil, "protocol error"},
		{"unknown opcode", []byte{0x83, 0x00}, nil, nil, "protocol error"},
		{"fragmented ping", []byte{0x09, 0x00}, nil, nil, "protocol error"},
		{"ping over 125 bytes", serverFrame(true, opPing, bytes.Repeat([]byte("p"), 126)), nil, nil, "protocol error"},
		{"continuation without a message", serverFrame(true, opContinuation, []byte("x")), nil, nil, "protocol error"},
		{"data inside a fragmented message", cat(serverFrame(false, opText, []byte("a")), serverFrame(true, opText, []byte("b"))),
			nil, nil, "protocol error"},
		{"length over the limit", []byte{0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, nil, nil, "protocol error"},
		{"stream ends inside a frame", serverFrame(true, opText, []byte("cut"))[:4], nil, nil, "eof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Whole reads, then one byte at a time, then a mix with empty reads.
			for _, chunks := range [][]int{nil, {1}, {3, 0, 7, 1, 0, 100}} {
				c := &chunkConn{in: tt.stream, chunks: chunks}
				end := readAllFrames(t, c, 1024)
				if fmt.Sprint(c.msgs) != fmt.Sprint(tt.msgs) || fmt.Sprint(c.ctrl) != fmt.Sprint(tt.ctrl) || end != tt.end {
					t.Errorf("reads %v: got %d messages %.60q, control %q, end %q; want %d %.60q, %q, %q",
						chunks, len(c.msgs), c.msgs, c.ctrl, end, len(tt.msgs), tt.msgs, tt.ctrl, tt.end)
				}
			}
			// The goroutine reader sees the same.
			msgs, ctrl, end := blockingReader(tt.stream, 256)
			if fmt.Sprint(msgs) != fmt.Sprint(tt.msgs) || fmt.Sprint(ctrl) != fmt.Sprint(tt.ctrl) || end != tt.end {
				t.Errorf("goroutine reader: %d messages %.60q, control %q, end %q", len(msgs), msgs, ctrl, end)
			}
		})
	}
}

// TestFrameReaderKeepsOnlyPartialFrames: between reads a connection holds a
// buffer only while a frame is incomplete, and the buffer fits that frame.
func TestFrameReaderKeepsOnlyPartialFrames(t *testing.T) {
	t.Parallel()
	frame := serverFrame(true, opText, bytes.Repeat([]byte("z"), 300))
	c := &chunkConn{in: append(append([]byte(nil), frame...), frame...), chunks: []int{len(frame) + 10, len(frame) - 10}}
	var r frameReader
	buf := make([]byte, 4096)
	if _, err := r.readOnce(c, buf); err != nil {
		t.Fatal(err)
	}
	if len(c.msgs) != 1 || r.part == nil || len(r.part.b) != 10 || cap(r.part.b) > 64 || r.need != len(frame) {
		t.Fatalf("after a read ending 10 bytes into a frame: %d messages, part %v, need %d", len(c.msgs), r.part, r.need)
	}
	if _, err := r.readOnce(c, buf); err != nil {
		t.Fatal(err)
	}
	if len(c.msgs) != 2 || r.part != nil || r.need != 0 || r.frag != nil {
		t.Fatalf("after the frame completed: %d messages, part %v", len(c.msgs), r.part)
	}
	// A frame longer than the read buffer is read into a buffer of its own size.
	big := serverFrame(true, opBinary, bytes.Repeat([]byte("q"), 10000))
	c = &chunkConn{in: big, chunks: []int{100, 5000}}
	r = frameReader{}
	if _, err := r.readOnce(c, buf); err != nil {
		t.Fatal(err)
	}
	if r.part == nil || cap(r.part.b) < len(big) || cap(r.part.b) > 2*len(big) {
		t.Fatalf("large frame: a buffer of %d bytes, want one for %d", cap(r.part.b), len(big))
	}
	for len(c.in) > 0 {
		if _, err := r.readOnce(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.msgs) != 1 || len(c.msgs[0]) != 10000 || r.part != nil {
		t.Fatalf("large frame: %d messages, part %v", len(c.msgs), r.part)
	}
}

// realFrames returns frames a real engine sends a client: the welcome, a
// broadcast carrying a marker, a channel message.
func realFrames(tb testing.TB) [][]byte {
	tb.Helper()
	u, e := startEngine(tb, engine.Config{})
	pu, _ := url.Parse(u)
	ws, err := dialWS(context.Background(), &net.Dialer{}, pu, nil, 4096, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	defer ws.close()
	if err := ws.write(opText, []byte(`{"type":"subscribe","channel":"c"}`)); err != nil {
		tb.Fatal(err)
	}
	var frames [][]byte
	read := func() {
		_ = ws.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, p, err := ws.next()
		if err != nil {
			tb.Fatal(err)
		}
		frames = append(frames, serverFrame(true, opText, p))
	}
	read() // welcome
	read() // subscribed
	if err := e.Broadcast(appendPayload(nil, marker{pub: 1, ch: 0, seq: 7, ts: 1}, 128)); err != nil {
		tb.Fatal(err)
	}
	read()
	if err := e.Publish("c", appendPayload(nil, marker{pub: 0, ch: 3, seq: 1, ts: 2}, 64)); err != nil {
		tb.Fatal(err)
	}
	read()
	return frames
}

// FuzzFrameReader feeds arbitrary server streams, cut into arbitrary reads,
// to the epoll reader and checks it against the goroutine reader: the same
// messages, the same pongs and close echo, the same way of ending, and no
// buffer kept beyond an incomplete frame. Seeded from frames a real engine
// sends and from every kind of frame the reader handles.
//
//	go test -run '^$' -fuzz FuzzFrameReader -fuzztime 60s ./loadtest
func FuzzFrameReader(f *testing.F) {
	real := realFrames(f)
	all := bytes.Join(real, nil)
	f.Add(all, []byte{1})
	f.Add(all, []byte{7, 0, 200})
	for _, fr := range real {
		f.Add(fr, []byte{0})
	}
	f.Add(bytes.Join([][]byte{serverFrame(false, opText, []byte("ab")), serverFrame(true, opPing, []byte("p")),
		serverFrame(true, opContinuation, []byte("cd")), serverFrame(true, opClose, []byte{3, 0xe9})}, nil), []byte{2, 5})
	f.Add(serverFrame(true, opBinary, bytes.Repeat([]byte{0xAB}, 70000)), []byte{255, 13})
	f.Add(append(serverFrame(true, opText, bytes.Repeat([]byte("m"), 300)), 0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'), []byte{3})
	f.Add([]byte{0x81, 126, 0, 2, 'h', 'i', 0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1, 'x'}, []byte{1, 2})
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		var chunks []int // read sizes; 0 is a read of nothing, unless all are 0
		for _, b := range cuts {
			chunks = append(chunks, int(b))
		}
		if bytes.Count(cuts, []byte{0}) == len(cuts) {
			chunks = nil
		}
		const bufLen = 512
		c := &chunkConn{in: stream, chunks: chunks}
		var r frameReader
		buf := make([]byte, bufLen)
		end := ""
		// Stuck: a whole cycle of read sizes (some may be reads of nothing)
		// without a byte taken.
		for idle := 0; end == "" && idle <= len(chunks)+1; {
			before := len(c.in)
			if _, err := r.readOnce(c, buf); err != nil {
				end = endClass(err)
			} else if len(c.in) == before {
				idle++
			} else {
				idle = 0
			}
			if p := r.part; p != nil && (r.need > bufLen && (cap(p.b) < r.need || cap(p.b) > 2*r.need) || r.need <= bufLen && cap(p.b) > max(64, 2*len(p.b))) {
				t.Fatalf("kept a buffer of %d bytes for %d bytes of a frame of %d", cap(p.b), len(p.b), r.need)
			}
		}
		if end == "" {
			t.Fatal("the reader made no progress")
		}
		msgs, ctrl, want := blockingReader(stream, bufLen)
		if len(msgs) != len(c.msgs) || end != want || fmt.Sprint(ctrl) != fmt.Sprint(c.ctrl) {
			t.Fatalf("epoll reader: %d messages, control %q, end %q; goroutine reader: %d, %q, %q",
				len(c.msgs), c.ctrl, end, len(msgs), ctrl, want)
		}
		for i := range msgs {
			if msgs[i] != c.msgs[i] {
				t.Fatalf("message %d differs: %.40q vs %.40q", i, c.msgs[i], msgs[i])
			}
		}
		r.release()
	})
}

func TestDecodeHeaderLengths(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 125, 126, 65535, 65536, maxFrame} {
		var hdr []byte
		switch {
		case n >= 65536:
			hdr = binary.BigEndian.AppendUint64([]byte{0x82, 127}, uint64(n))
		case n >= 126:
			hdr = []byte{0x82, 126, byte(n >> 8), byte(n)}
		default:
			hdr = []byte{0x82, byte(n)}
		}
		h, ok, err := decodeHeader(hdr)
		if err != nil || !ok || h.n != n || h.hl != len(hdr) || !h.fin || h.op != opBinary {
			t.Errorf("n=%d: %+v ok=%v err=%v", n, h, ok, err)
		}
		if _, ok, _ := decodeHeader(hdr[:len(hdr)-1]); ok && len(hdr) > 2 {
			t.Errorf("n=%d: a truncated header decoded", n)
		}
	}
}

// countingConn is a chunkConn that only counts the messages it gets.
type countingConn struct {
	chunkConn
	n int
}

func (c *countingConn) message([]byte, int64) { c.n++ }

// TestFrameReaderDoesNotAllocate: whole frames, and frames cut by the end of
// a read, cost no allocation once the partial-frame pool is warm.
func TestFrameReaderDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers on purpose; run without -race")
	}
	frame := serverFrame(true, opText, []byte(`{"type":"message","data":`+string(appendPayload(nil, marker{1, 2, 3, 4}, 128))+`}`))
	stream := bytes.Repeat(frame, 64)
	c := &countingConn{chunkConn: chunkConn{chunks: []int{1000, 37, 4096}}}
	var r frameReader
	buf := make([]byte, 4096)
	allocs := testing.AllocsPerRun(100, func() {
		c.in = stream
		for len(c.in) > 0 {
			if _, err := r.readOnce(c, buf); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 || c.n != 101*64 {
		t.Errorf("%v allocations per %d frames; %d messages", allocs, 64, c.n)
	}
}
