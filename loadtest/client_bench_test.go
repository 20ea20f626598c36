package loadtest

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// The benchmarks below justify the hand-rolled client (wsclient.go) against
// gws's client on the two costs that matter to a load generator: CPU per
// received frame, and memory per held connection. Run with
//
//	go test -run '^$' -bench 'Client' -benchtime 2x ./loadtest   (idle)
//	go test -run '^$' -bench 'ClientRead' ./loadtest              (frames)

// frameServer accepts WebSocket handshakes on loopback and then, when stream
// is set, writes the same shardhub-shaped broadcast frame forever.
func frameServer(tb testing.TB, stream bool) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	frame := serverFrame(true, opText, []byte(`{"type":"message","data":`+string(appendPayload(nil, marker{1, 0, 1, time.Now().UnixNano()}, 128))+`}`))
	var batch []byte
	for range 256 {
		batch = append(batch, frame...)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				h := sha1.New()
				h.Write([]byte(req.Header.Get("Sec-WebSocket-Key")))
				h.Write(wsGUID)
				_, _ = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
					base64.StdEncoding.EncodeToString(h.Sum(nil)) + "\r\n\r\n"))
				for stream {
					if _, err := c.Write(batch); err != nil {
						return
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "ws://" + ln.Addr().String() + "/ws"
}

// gwsCounter counts gws messages carrying a marker.
type gwsCounter struct {
	gws.BuiltinEventHandler
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (h *gwsCounter) OnMessage(_ *gws.Conn, m *gws.Message) {
	if _, ok := findMarker(m.Bytes()); ok {
		if h.n.Add(1) == h.want {
			close(h.done)
		}
	}
	_ = m.Close()
}

func BenchmarkClientRead(b *testing.B) {
	b.Run("lean", func(b *testing.B) {
		u, _ := url.Parse(frameServer(b, true))
		c, err := dialWS(context.Background(), &net.Dialer{}, u, nil, DefaultReadBufferSize, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer c.close()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			_, p, err := c.next()
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := findMarker(p); !ok {
				b.Fatal("no marker")
			}
		}
	})
	b.Run("gws", func(b *testing.B) {
		addr := frameServer(b, true)
		h := &gwsCounter{want: int64(b.N), done: make(chan struct{})}
		c, _, err := gws.NewClient(h, &gws.ClientOption{Addr: addr})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		go c.ReadLoop()
		<-h.done
		b.StopTimer()
		_ = c.NetConn().Close()
	})
}

// liveBytes is the heap in use plus goroutine stacks, after a GC.
func liveBytes() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// benchIdle holds n idle client connections opened by open and reports the
// client-side memory they cost (the server side is excluded: it is the same
// for both and measured before the clients open).
func benchIdle(b *testing.B, open func(addr string) (closer func())) {
	const n = 2000
	addr := frameServer(b, false)
	for range b.N {
		before := liveBytes()
		closers := make([]func(), 0, n)
		for range n {
			closers = append(closers, open(addr))
		}
		time.Sleep(100 * time.Millisecond) // let every reader reach its blocking read
		after := liveBytes()
		b.ReportMetric(float64(after-before)/n, "B/conn")
		for _, c := range closers {
			c()
		}
	}
}

func BenchmarkClientIdleConn(b *testing.B) {
	b.Run("lean", func(b *testing.B) {
		benchIdle(b, func(addr string) func() {
			u, _ := url.Parse(addr)
			c, err := dialWS(context.Background(), &net.Dialer{}, u, nil, DefaultReadBufferSize, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				for {
					if _, _, err := c.next(); err != nil {
						return
					}
				}
			}()
			return func() { c.close() }
		})
	})
	b.Run("gws", func(b *testing.B) {
		benchIdle(b, func(addr string) func() {
			c, _, err := gws.NewClient(&gws.BuiltinEventHandler{}, &gws.ClientOption{Addr: addr})
			if err != nil {
				b.Fatal(err)
			}
			go c.ReadLoop()
			return func() { _ = c.NetConn().Close() }
		})
	})
}
