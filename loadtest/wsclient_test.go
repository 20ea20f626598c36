package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// serverFrame encodes one unmasked server frame.
func serverFrame(fin bool, op byte, p []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// readClientFrame decodes one masked client frame.
func readClientFrame(r io.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 == 0 {
		return 0, nil, errors.New("client frame not masked")
	}
	n := int(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(e[:]))
	}
	var mask [4]byte
	if _, err := io.ReadFull(r, mask[:]); err != nil {
		return 0, nil, err
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	for i := range p {
		p[i] ^= mask[i&3]
	}
	return h[0] & 0x0F, p, nil
}

func pipeConn(tb testing.TB, bufSize int) (*wsConn, net.Conn) {
	tb.Helper()
	client, server := net.Pipe()
	tb.Cleanup(func() { client.Close(); server.Close() })
	return &wsConn{nc: client, br: bufio.NewReaderSize(client, bufSize)}, server
}

func TestWSConnFrames(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("b"), 70000)
	tests := []struct {
		name   string
		frames [][]byte
		want   []string
	}{
		{"small text", [][]byte{serverFrame(true, opText, []byte("hello"))}, []string{"hello"}},
		{"binary", [][]byte{serverFrame(true, opBinary, []byte{0, 1, 2})}, []string{"\x00\x01\x02"}},
		{"16-bit length", [][]byte{serverFrame(true, opText, bytes.Repeat([]byte("m"), 300))}, []string{strings.Repeat("m", 300)}},
		{"64-bit length past the buffer", [][]byte{serverFrame(true, opText, big)}, []string{string(big)}},
		{"fragmented in place", [][]byte{
			serverFrame(false, opText, []byte("ab")),
			serverFrame(false, opContinuation, []byte("cd")),
			serverFrame(true, opContinuation, []byte("ef")),
		}, []string{"abcdef"}},
		{"fragmented with a ping inside", [][]byte{
			serverFrame(false, opText, []byte("ab")),
			serverFrame(true, opPing, []byte("p")),
			serverFrame(true, opContinuation, []byte("cd")),
		}, []string{"abcd"}},
		{"fragmented, big fragments", [][]byte{
			serverFrame(false, opText, big[:1000]),
			serverFrame(true, opContinuation, big[1000:]),
		}, []string{string(big)}},
		{"pong skipped", [][]byte{serverFrame(true, opPong, nil), serverFrame(true, opText, []byte("x"))}, []string{"x"}},
		{"several", [][]byte{serverFrame(true, opText, []byte("1")), serverFrame(true, opText, []byte("22"))}, []string{"1", "22"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, srv := pipeConn(t, 256)
			pongs := make(chan string, 4)
			go func() {
				for _, f := range tt.frames {
					if _, err := srv.Write(f); err != nil {
						return
					}
				}
			}()
			go func() { // collects the client's pongs
				for {
					op, p, err := readClientFrame(srv)
					if err != nil {
						return
					}
					if op == opPong {
						pongs <- string(p)
					}
				}
			}()
			for _, want := range tt.want {
				_, p, err := c.next()
				if err != nil {
					t.Fatal(err)
				}
				if string(p) != want {
					t.Fatalf("got %d bytes %.20q…, want %d bytes", len(p), p, len(want))
				}
			}
			if strings.Contains(tt.name, "ping") {
				select {
				case p := <-pongs:
					if p != "p" {
						t.Errorf("pong payload %q", p)
					}
				case <-time.After(5 * time.Second):
					t.Error("no pong")
				}
			}
		})
	}
}

func TestWSConnClose(t *testing.T) {
	t.Parallel()
	c, srv := pipeConn(t, 256)
	go func() {
		_, _ = srv.Write(serverFrame(true, opClose, []byte{0x03, 0xF5})) // 1013
	}()
	echo := make(chan []byte, 1)
	go func() {
		_, p, _ := readClientFrame(srv)
		echo <- p
	}()
	_, _, err := c.next()
	var ce closeError
	if !errors.As(err, &ce) || ce.code != 1013 {
		t.Fatalf("err = %v", err)
	}
	if got := errorKind(err); got != "closed_1013" {
		t.Errorf("kind = %q", got)
	}
	if p := <-echo; !bytes.Equal(p, []byte{0x03, 0xF5}) {
		t.Errorf("close echo %v", p)
	}
}

func TestWSConnWriteMasks(t *testing.T) {
	t.Parallel()
	c, srv := pipeConn(t, 256)
	for _, n := range []int{0, 5, 125, 126, 70000} {
		msg := bytes.Repeat([]byte{'z'}, n)
		go func() { _ = c.write(opText, msg) }()
		op, p, err := readClientFrame(srv)
		if err != nil || op != opText || !bytes.Equal(p, msg) {
			t.Fatalf("n=%d: op %d, %d bytes", n, op, len(p))
		}
	}
}

func TestDialWSHandshakeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
		kind    string
	}{
		{"forbidden", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) }, "http_403"},
		{"bad accept", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Sec-WebSocket-Accept", "nope")
			w.WriteHeader(http.StatusSwitchingProtocols)
		}, "handshake"},
		{"hangs", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			u, _ := url.Parse("ws" + strings.TrimPrefix(srv.URL, "http") + "/ws")
			start := time.Now()
			_, err := dialWS(context.Background(), &net.Dialer{}, u, nil, 1024, 300*time.Millisecond)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			if got := errorKind(err); got != tt.kind {
				t.Errorf("kind = %q (%v), want %q", got, err, tt.kind)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("dial took %s", time.Since(start))
			}
		})
	}
}

func BenchmarkWSConnNext(b *testing.B) {
	frame := serverFrame(true, opText, []byte(`{"type":"message","data":`+string(appendPayload(nil, marker{1, 2, 3, 4}, 128))+`}`))
	stream := bytes.Repeat(frame, 1024)
	r := bytes.NewReader(stream)
	c := &wsConn{br: bufio.NewReaderSize(r, 2048)}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		_, p, err := c.next()
		if err == io.EOF {
			r.Reset(stream)
			c.br.Reset(r)
			c.pending = 0
			continue
		}
		if _, ok := findMarker(p); !ok {
			b.Fatal("no marker")
		}
	}
}
