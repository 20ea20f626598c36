package loadtest

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
)

// scriptServer is a raw WebSocket server driven by the test: it answers the
// handshake and sends a welcome frame in the same write (so the client finds
// it buffered with the handshake), then writes what the test asks to every
// connection and records the control frames the clients send back.
type scriptServer struct {
	url string

	mu    sync.Mutex // guards conns and ctrl.
	conns []net.Conn
	ctrl  map[net.Conn][]string // "op:payload" of each control frame a client sent
}

func newScriptServer(tb testing.TB) *scriptServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &scriptServer{url: "ws://" + ln.Addr().String() + "/ws", ctrl: map[net.Conn][]string{}}
	welcome := serverFrame(true, opText, []byte(`{"type":"welcome","id":"x"}`))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					c.Close()
					return
				}
				h := sha1.New()
				h.Write([]byte(req.Header.Get("Sec-WebSocket-Key")))
				h.Write(wsGUID)
				resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
					base64.StdEncoding.EncodeToString(h.Sum(nil)) + "\r\n\r\n"
				if _, err := c.Write(append([]byte(resp), welcome...)); err != nil {
					return
				}
				s.mu.Lock()
				s.conns = append(s.conns, c)
				s.mu.Unlock()
				for {
					op, p, err := readClientFrame(br)
					if err != nil {
						return
					}
					if op >= opClose {
						s.mu.Lock()
						s.ctrl[c] = append(s.ctrl[c], fmt.Sprintf("%d:%q", op, p))
						s.mu.Unlock()
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

// send writes b to every connection, in writes of at most chunk bytes (0: at
// once) with a pause between them, so that the client's reads end inside
// frames.
func (s *scriptServer) send(tb testing.TB, b []byte, chunk int) {
	tb.Helper()
	s.mu.Lock()
	conns := append([]net.Conn(nil), s.conns...)
	s.mu.Unlock()
	for _, c := range conns {
		for rest := b; len(rest) > 0; {
			n := len(rest)
			if chunk > 0 {
				n = min(n, chunk)
			}
			if _, err := c.Write(rest[:n]); err != nil {
				tb.Fatal(err)
			}
			rest = rest[n:]
			if chunk > 0 {
				time.Sleep(200 * time.Microsecond)
			}
		}
	}
}

// control returns the control frames each connection sent, in order.
func (s *scriptServer) control() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]string
	for _, c := range s.conns {
		out = append(out, append([]string(nil), s.ctrl[c]...))
	}
	return out
}

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// markerFrame is a server text frame carrying message seq of stream (0, 0)
// padded to size bytes.
func markerFrame(fin bool, op byte, seq uint64, size int) []byte {
	return serverFrame(fin, op, appendPayload(nil, marker{seq: seq, ts: time.Now().UnixNano()}, size))
}

// TestFleetFramesOverSockets drives a fleet's connections through every kind
// of frame a server may send, cut anywhere, and checks what each I/O model
// counts: frames sent with the handshake, reads ending inside frames, frames
// larger than any read buffer, fragments with a ping between them, pongs,
// out-of-order and duplicate messages, and a close code.
func TestFleetFramesOverSockets(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		srv := newScriptServer(t)
		const conns = 4
		f, err := NewFleet(Config{IO: io, URLs: []string{srv.url}, Conns: conns, ReadyMatch: `"type":"welcome"`, Logger: quietLogger()}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		stopped := false
		defer func() {
			if !stopped {
				_, _ = f.Stop(NewHistogram(), NewHistogram())
			}
		}()
		// The welcome came in the handshake's own write.
		waitFor(t, "ready connections", func() bool { c := f.Counts(); return c.DialsDone && c.Ready == conns })
		if n, err := f.Mark(); err != nil || n != conns {
			t.Fatalf("mark: %d, %v", n, err)
		}
		big := markerFrame(true, opBinary, 2, 100<<10) // past the epoll loop's 64 KiB buffer
		frag := appendPayload(nil, marker{seq: 3, ts: time.Now().UnixNano()}, 300)
		stream := bytes.Join([][]byte{
			serverFrame(true, opPing, []byte("p1")),
			markerFrame(true, opText, 1, 100),
			big,
			serverFrame(false, opText, frag[:100]),
			serverFrame(true, opPing, []byte("p2")),
			serverFrame(false, opContinuation, frag[100:200]),
			serverFrame(true, opContinuation, frag[200:]),
			markerFrame(true, opText, 5, 80),
			markerFrame(true, opText, 4, 80), // late
			markerFrame(true, opText, 5, 80), // again
			serverFrame(true, opPong, nil),
		}, nil)
		srv.send(t, stream[:300], 7) // the first frames trickle in
		srv.send(t, stream[300:], 0)
		waitFor(t, "deliveries", func() bool { return f.Counts().Unique == 5*conns })
		waitFor(t, "the duplicate", func() bool { return f.Counts().Duplicates == conns })
		c := f.Counts()
		if c.Received != 6*conns || c.OutOfOrder != conns || c.Other != conns || c.Ignored != 0 {
			t.Errorf("received %d out of order %d other %d ignored %d", c.Received, c.OutOfOrder, c.Other, c.Ignored)
		}
		if want := int64(conns * (100 + 100<<10 + 300 + 3*80)); c.Bytes != want { // payloads are padded to their size
			t.Errorf("bytes %d, want %d", c.Bytes, want)
		}
		waitFor(t, "pongs", func() bool {
			for _, ctrl := range srv.control() {
				if strings.Join(ctrl, ",") != `10:"p1",10:"p2"` {
					return false
				}
			}
			return true
		})
		// A server closing one connection with 1013: lost, counted by code, echoed.
		srv.mu.Lock()
		victim := srv.conns[0]
		srv.mu.Unlock()
		if _, err := victim.Write(serverFrame(true, opClose, []byte{0x03, 0xF5})); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the close", func() bool { c := f.Counts(); return c.Open == conns-1 }) // counted before it stops being open
		c = f.Counts()
		if c.Lost != 1 || c.Open != conns-1 || c.Errors["closed_1013"] != 1 {
			t.Errorf("lost %d open %d errors %v", c.Lost, c.Open, c.Errors)
		}
		waitFor(t, "the close echo", func() bool { ctrl := srv.control()[0]; return len(ctrl) == 3 && ctrl[2] == `8:"\x03\xf5"` })
		lat, conn := NewHistogram(), NewHistogram()
		fin, err := f.Stop(lat, conn)
		stopped = true
		if err != nil || fin.Open != 0 || fin.Dropped != 1 {
			t.Errorf("stop: open %d dropped %d, %v", fin.Open, fin.Dropped, err)
		}
		if lat.TotalCount() != fin.Unique || conn.TotalCount() != conns {
			t.Errorf("latency samples %d for %d deliveries, handshake samples %d", lat.TotalCount(), fin.Unique, conn.TotalCount())
		}
	})
}

// TestIOModesAgree runs the same load against the real engine with each I/O
// model: connections, deliveries, loss, order and the frames around them
// must come out the same.
func TestIOModesAgree(t *testing.T) {
	t.Parallel()
	modes := ioModes()
	if len(modes) < 2 {
		t.Skip("one I/O model on this system")
	}
	for _, sc := range []Scenario{Broadcast, Channels} {
		t.Run(string(sc), func(t *testing.T) {
			t.Parallel()
			results := make([]*Result, len(modes))
			var wg sync.WaitGroup
			for i, io := range modes {
				wg.Go(func() {
					url, _ := startEngine(t, engine.Config{})
					results[i] = run(t, Config{IO: io, Scenario: sc, URLs: []string{url}, Conns: 60, Rate: 20, Duration: time.Second,
						Channels: 6, SubsPerConn: 2, ReadyMatch: map[Scenario]string{Broadcast: `"type":"welcome"`}[sc]})
				})
			}
			wg.Wait()
			// What each connection saw; how many publications the publisher
			// made in the second depends on the machine, not on the clients.
			summary := func(r *Result) string {
				c := r.Counts
				return fmt.Sprintf("connected %d counted %d subscriptions %d loss %d dups %d ooo %d other %d dropped %d, every copy a first copy %v",
					c.Connected, r.Counted, r.Subscriptions, r.Loss(), c.Duplicates, c.OutOfOrder, c.Other, c.Dropped, c.Received == c.Unique)
			}
			want := summary(results[0])
			if results[0].Loss() != 0 || results[0].Expected == 0 {
				t.Fatalf("%s: %s", modes[0], want)
			}
			for i, r := range results[1:] {
				if got := summary(r); got != want {
					t.Errorf("%s: %s\n%s: %s", modes[i+1], got, modes[0], want)
				}
			}
		})
	}
}

// TestFleetStopBeforeStart: a fleet stopped without starting holds nothing.
func TestFleetStopBeforeStart(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		f, err := NewFleet(Config{IO: io, URLs: []string{"ws://127.0.0.1:1/ws"}, Conns: 3}, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := f.Stop(NewHistogram(), NewHistogram())
		if err != nil || c.Open != 0 || c.Attempted != 0 {
			t.Errorf("%+v, %v", c, err)
		}
	})
}
