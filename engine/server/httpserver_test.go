package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// hardened serves h on a loopback port with the bundled server's limits.
func hardened(t *testing.T, h http.Handler, cfg server.HTTPConfig) (*server.HTTPServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = quietLogger()
	srv := server.NewHTTPServer(h, cfg)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv, ln.Addr().String()
}

// getOnce makes one request on a new connection and returns the status.
func getOnce(t *testing.T, addr, path string) int {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// rawHTTP opens a connection and writes s on it.
func rawHTTP(t *testing.T, addr, s string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if s != "" {
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
}

// TestIdleKeepAlivesCannotExhaustTheServer: the cap is full of idle
// keep-alive connections, yet a health check gets in.
func TestIdleKeepAlivesCannotExhaustTheServer(t *testing.T) {
	t.Parallel()
	srv, addr := hardened(t, okHandler(), server.HTTPConfig{MaxConns: 20})
	for range 20 {
		c := rawHTTP(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close() // the connection stays open, idle
	}
	waitFor(t, "20 idle connections", func() bool { return srv.Conns() == 20 })
	for range 5 {
		if code := getOnce(t, addr, "/healthz"); code != 200 {
			t.Fatalf("health check at the cap: %d", code)
		}
	}
	if n := srv.Conns(); n > 20 {
		t.Fatalf("%d connections held, cap 20", n)
	}
}

// TestSlowlorisCannotExhaustTheServer: connections that never finish their
// headers are closed by the header timeout, and give way to newcomers at the
// cap before that.
func TestSlowlorisCannotExhaustTheServer(t *testing.T) {
	t.Parallel()
	srv, addr := hardened(t, okHandler(), server.HTTPConfig{MaxConns: 10, ReadHeaderTimeout: 3 * time.Second})
	slow := make([]net.Conn, 10)
	for i := range slow {
		slow[i] = rawHTTP(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	}
	waitFor(t, "10 half-sent requests", func() bool { return srv.Conns() == 10 })
	time.Sleep(1100 * time.Millisecond) // older than the slow-header threshold
	if code := getOnce(t, addr, "/healthz"); code != 200 {
		t.Fatalf("health check behind slow headers: %d", code)
	}
	// The header timeout closes the rest on its own.
	for i, c := range slow {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("slow connection %d: %v (want closed by the server)", i, err)
		}
	}
}

// TestBusyServerRefuses503: when every connection is in a request, a
// newcomer gets 503 right away instead of waiting for a descriptor.
func TestBusyServerRefuses503(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var refused atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		<-release
		_, _ = w.Write([]byte("done"))
	})
	_, addr := hardened(t, h, server.HTTPConfig{MaxConns: 2, OnRefuse: func() { refused.Add(1) }})
	busy := []net.Conn{
		rawHTTP(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		rawHTTP(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	}
	time.Sleep(200 * time.Millisecond) // both are in their handlers
	c := rawHTTP(t, addr, "")
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("at the cap with every connection busy: %v %v, want 503 with Retry-After", resp, err)
	}
	if refused.Load() != 1 {
		t.Fatalf("refusals counted %d, want 1", refused.Load())
	}
	close(release)
	for _, b := range busy {
		_ = b.SetReadDeadline(time.Now().Add(30 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(b), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("busy request: %v %v", resp, err)
		}
	}
}

// TestWebSocketsLeaveTheHTTPCap: upgraded connections are the engine's to
// bound; they do not take HTTP slots, and a client sending slowly is not cut
// by the HTTP read timeout once upgraded.
func TestWebSocketsLeaveTheHTTPCap(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(t.Context()) })
	srv, addr := hardened(t, server.Handler(e, server.Options{Logger: quietLogger(), StatsInterval: -1}),
		server.HTTPConfig{MaxConns: 3, ReadTimeout: 500 * time.Millisecond, ReadHeaderTimeout: 500 * time.Millisecond})
	var clients []*gws.Conn
	for i := range 10 {
		ws, _, err := gws.NewClient(&gws.BuiltinEventHandler{}, &gws.ClientOption{Addr: "ws://" + addr + "/ws"})
		if err != nil {
			t.Fatalf("websocket %d: %v", i, err)
		}
		t.Cleanup(func() { ws.NetConn().Close() })
		clients = append(clients, ws)
	}
	waitFor(t, "10 connections in the engine", func() bool { return e.Connections() == 10 })
	if n := srv.Conns(); n != 0 {
		t.Fatalf("%d HTTP slots held by WebSockets", n)
	}
	time.Sleep(time.Second) // past the HTTP read timeout
	for i, ws := range clients {
		if err := ws.WriteString(fmt.Sprintf(`{"type":"subscribe","channel":"c%d"}`, i)); err != nil {
			t.Fatalf("websocket %d after the HTTP read timeout: %v", i, err)
		}
	}
	waitFor(t, "subscriptions after the HTTP timeouts", func() bool { return len(e.Channels()) == 10 })
	if code := getOnce(t, addr, "/healthz"); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
}
