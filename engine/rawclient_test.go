package engine_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawConn is a WebSocket client made by hand over TCP, for inputs no client
// library sends: it writes any bytes and reads the server's frames itself.
type rawConn struct {
	tb testing.TB
	c  net.Conn
	br *bufio.Reader
}

// serverFrame is one frame the server sent.
type serverFrame struct {
	op      byte
	payload []byte
}

// rawDial upgrades a TCP connection to ts by hand; extra is written in the
// same write as the request (frames pipelined behind the handshake).
func rawDial(tb testing.TB, ts *testServer, extra []byte) *rawConn {
	tb.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	req := "GET /ws HTTP/1.1\r\nHost: " + ts.addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := c.Write(append([]byte(req), extra...)); err != nil {
		tb.Fatal(err)
	}
	r := &rawConn{tb: tb, c: c, br: bufio.NewReader(c)}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade answered %s", resp.Status)
	}
	for {
		f, err := r.readFrame()
		if err != nil {
			tb.Fatalf("no welcome: %v", err)
		}
		if f.op == 0x9 || f.op == 0xA {
			continue // the shard's ping may come first, right after registration
		}
		if !bytes.Contains(f.payload, []byte(`"welcome"`)) {
			tb.Fatalf("no welcome: opcode %d %q", f.op, f.payload)
		}
		return r
	}
}

func (r *rawConn) write(b []byte) error {
	_ = r.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := r.c.Write(b)
	return err
}

// readFrame reads one server frame (servers never mask).
func (r *rawConn) readFrame() (serverFrame, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return serverFrame{}, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 {
		return serverFrame{}, errors.New("server frame is masked")
	}
	if n > 1<<24 {
		return serverFrame{}, fmt.Errorf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{op: h[0] & 0x0F, payload: p}, nil
}

// closeFrame reads until the server's close frame and returns its code and
// reason, counting the data frames before it; it fails when the connection
// ends without one.
func (r *rawConn) closeFrame() (code uint16, reason string, before int) {
	r.tb.Helper()
	for {
		f, err := r.readFrame()
		if err != nil {
			r.tb.Fatalf("connection ended without a close frame: %v (after %d frames)", err, before)
		}
		if f.op == 0x8 {
			if len(f.payload) < 2 {
				return 1005, "", before
			}
			return binary.BigEndian.Uint16(f.payload), string(f.payload[2:]), before
		}
		before++
	}
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many lines contain s.
func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
