package loadtest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// TestMain makes this test binary a load-test worker when a test re-executes
// it with WorkerEnv=1.
func TestMain(m *testing.M) {
	ServeWorkerFromEnv()
	os.Exit(m.Run())
}

// quietLogger discards logs.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startEngine serves a real shardhub engine with the bundled HTTP API on a
// loopback listener and returns its ws:// URL.
func startEngine(tb testing.TB, cfg engine.Config) (string, *engine.Engine) {
	tb.Helper()
	cfg.Logger = quietLogger()
	e, err := engine.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(server.Handler(e, server.Options{Logger: cfg.Logger}))
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", e
}

// fakeServer is a minimal WebSocket fan-out server (gws) whose delivery can be
// made to misbehave: mangle decides, for the n-th broadcast (0-based), which
// payloads every connection gets instead.
type fakeServer struct {
	URL string // ws://…/ws

	mangle     func(n int, body []byte) [][]byte
	apiBlock   bool          // /api/broadcast never answers
	apiStatus  int           // when set, /api/broadcast answers it and delivers nothing
	deliverLag time.Duration // delay before fan-out

	closed chan struct{} // closed when the test ends

	mu    sync.Mutex // guards conns and n.
	conns []*gws.Conn
	n     int
	srv   *httptest.Server
}

func newFakeServer(tb testing.TB, setup func(*fakeServer)) *fakeServer {
	tb.Helper()
	f := &fakeServer{closed: make(chan struct{})}
	if setup != nil {
		setup(f)
	}
	up := gws.NewUpgrader(&gws.BuiltinEventHandler{}, &gws.ServerOption{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		go c.ReadLoop()
	})
	mux.HandleFunc("POST /api/broadcast", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // read first: only then does net/http notice a client hanging up
		if f.apiBlock {
			select {
			case <-r.Context().Done():
			case <-f.closed:
			}
			return
		}
		if f.apiStatus != 0 {
			w.WriteHeader(f.apiStatus)
			return
		}
		f.mu.Lock()
		n := f.n
		f.n++
		f.mu.Unlock()
		out := [][]byte{body}
		if f.mangle != nil {
			out = f.mangle(n, body)
		}
		deliver := func() {
			f.mu.Lock()
			conns := append([]*gws.Conn(nil), f.conns...)
			f.mu.Unlock()
			for _, c := range conns {
				for _, p := range out {
					_ = c.WriteMessage(gws.OpcodeText, append([]byte(`{"event":"msg","body":`), append(p, '}')...))
				}
			}
		}
		if f.deliverLag > 0 {
			time.AfterFunc(f.deliverLag, deliver)
		} else {
			deliver()
		}
		w.WriteHeader(http.StatusAccepted)
	})
	f.srv = httptest.NewServer(mux)
	tb.Cleanup(func() {
		close(f.closed)
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			_ = c.NetConn().Close()
		}
		f.mu.Unlock()
	})
	f.URL = "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws"
	return f
}

// run runs cfg with test-friendly defaults and fails the test on error.
func run(tb testing.TB, cfg Config) *Result {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.Interval == 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.Settle == 0 {
		cfg.Settle = 100 * time.Millisecond
	}
	if cfg.Drain == 0 {
		cfg.Drain = 3 * time.Second
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// newSilentListener accepts TCP connections and never answers; it returns its
// address.
func newSilentListener(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// ioModes are the I/O models of this system: a test of the connections runs
// with each, and each must measure the same.
func ioModes() []string {
	if epollSupported {
		return []string{IOGoroutine, IOEpoll}
	}
	return []string{IOGoroutine}
}

// eachIO runs test once per I/O model, as parallel subtests named after it.
func eachIO(t *testing.T, test func(t *testing.T, io string)) {
	t.Helper()
	for _, io := range ioModes() {
		t.Run(io, func(t *testing.T) {
			t.Parallel()
			test(t, io)
		})
	}
}
