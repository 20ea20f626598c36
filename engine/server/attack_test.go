package server_test

// Attacks on the bundled server's HTTP defaults over loopback. A TestAttack
// test that fails names a weakness still open; one that passes locks in a
// protection that held.

import (
	"bufio"
	"bytes"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// lineLog collects log output and counts lines containing a string.
type lineLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lineLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// dialFrom opens a TCP connection to addr from the loopback address src, so
// that a test can tell an attacker (127.0.0.1) from a newcomer (127.0.0.2).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 30 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes req on a new connection from src and returns the status.
func roundTrip(t *testing.T, src, addr, req string) int {
	t.Helper()
	c := dialFrom(t, src, addr)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAttackSlowBodiesCannotLockOutNewcomers: a connection that has sent its
// headers and then trickles (or never sends) its body is "active" for the
// whole ReadTimeout (15 s by default), and active connections are never
// evicted at the cap. One client holding MaxConns such connections (256 by
// default; a GET /healthz with a Content-Length is enough, from any address)
// makes every newcomer — health checks and WebSocket upgrades alike — get
// 503 until the timeout, and can start over at once: measured against
// `shardhub serve`, /healthz and /ws answered 503 for 14 s out of every 15.
// Here the attacker (127.0.0.1) fills a cap of 8; a newcomer from another
// address must still get in.
func TestAttackSlowBodiesCannotLockOutNewcomers(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	srv, addr := hardened(t, server.Handler(e, server.Options{Logger: quietLogger(), StatsInterval: -1}),
		server.HTTPConfig{MaxConns: 8, ReadTimeout: 10 * time.Minute})
	for i := range 8 {
		c := dialFrom(t, "127.0.0.1", addr)
		req := "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab" // the handler answers; the body never ends
		if i%2 == 1 {
			req = "POST /api/publish?channel=c HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n\"ab"
		}
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "8 slow bodies held", func() bool { return srv.Conns() == 8 })
	ws := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	var health, upgrade int
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		health = roundTrip(t, "127.0.0.2", addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		upgrade = roundTrip(t, "127.0.0.2", addr, ws)
		if health == http.StatusOK && upgrade == http.StatusSwitchingProtocols {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("one client's 8 trickling bodies lock everyone out: healthz %d, WebSocket upgrade %d", health, upgrade)
}

// TestAttackAPIRefusalLogsAreRateLimited: every refused API request writes a
// log line, whoever sends it: cross-site (403), remote (403), wrong token
// (401). One connection pipelining 3000 cross-site POSTs to `shardhub serve`
// wrote 3000 lines in 0.2 s. Log lines caused by clients must be
// rate-limited; the metric (shardhub_api_errors_total) still counts each.
func TestAttackAPIRefusalLogsAreRateLimited(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	var logs lineLog
	log := slog.New(slog.NewTextHandler(&logs, nil))
	h := server.Handler(e, server.Options{APIToken: "tok", Logger: log, StatsInterval: -1})
	const n = 300
	start := time.Now()
	for i := range n {
		r := httptest.NewRequest(http.MethodPost, "http://hub.example/api/broadcast", strings.NewReader(`{"x":1}`))
		r.RemoteAddr = "203.0.113.9:4444"
		switch i % 2 {
		case 0:
			r.Header.Set("Origin", "https://evil.example")
		case 1:
			r.Header.Set("Authorization", "Bearer wrong")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusForbidden && w.Code != http.StatusUnauthorized {
			t.Fatalf("request %d: %d", i, w.Code)
		}
	}
	// Generous: a burst of 50 and 10 lines a second.
	allowed := 50 + int(math.Ceil(10*time.Since(start).Seconds()))
	if got := logs.count("api request refused"); got > allowed {
		t.Fatalf("%d log lines for %d refused requests in %v; at most %d allowed", got, n, time.Since(start).Round(time.Millisecond), allowed)
	}
}

// TestAttackDNSRebindingIsRefused: without --api-token the publish API
// answers loopback clients only, to keep web pages out. A page on
// attacker.example whose name is rebound to 127.0.0.1 is same-origin with
// itself: its browser connects from loopback and sends Host and Origin
// attacker.example and Sec-Fetch-Site same-origin, so the guard lets it
// broadcast to every client. The same happens behind a reverse proxy on the
// same host, where every internet request arrives from loopback. Without a
// token the API must also require a Host that names this machine (localhost
// or an IP literal), as loopback-only services do against rebinding.
func TestAttackDNSRebindingIsRefused(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	addr := startEngine(t, e, server.Options{Logger: quietLogger(), StatsInterval: -1}, nil)
	_, port, _ := net.SplitHostPort(addr)
	post := func(host string, browser bool) int {
		req := "POST /api/broadcast HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n"
		if browser {
			req += "Origin: http://" + host + "\r\nSec-Fetch-Site: same-origin\r\n"
		}
		return roundTrip(t, "127.0.0.1", addr, req+"\r\n{\"pwned\":1}")
	}
	// What a local backend or a local browser page does keeps working.
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port} {
		if code := post(host, host != "[::1]:"+port); code != http.StatusAccepted {
			t.Errorf("Host %s from loopback: %d, want 202", host, code)
		}
	}
	rebound := "attacker.example:" + port
	if code := post(rebound, true); code == http.StatusAccepted {
		t.Errorf("a rebound page (Host and Origin %s) broadcast through the loopback-only API: %d", rebound, code)
	}
	if code := post("hub.example.com", false); code == http.StatusAccepted {
		t.Errorf("a request proxied from the internet (Host hub.example.com, from loopback, no token) was accepted: %d", code)
	}
}

// TestAttackCrossSiteTricksRefused: the browser-side tricks that the guard
// refuses. (Holds.)
func TestAttackCrossSiteTricksRefused(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	h := server.Handler(e, server.Options{Logger: quietLogger(), StatsInterval: -1})
	for _, tc := range []struct {
		name    string
		method  string
		headers map[string]string
		refused func(code int, hdr http.Header) bool
	}{
		{"CORS preflight for a JSON POST", http.MethodOptions,
			map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
			func(code int, hdr http.Header) bool {
				return code >= 400 && hdr.Get("Access-Control-Allow-Origin") == ""
			}},
		{"sandboxed page (Origin null), text/plain", http.MethodPost,
			map[string]string{"Origin": "null", "Content-Type": "text/plain"},
			func(code int, _ http.Header) bool { return code == http.StatusForbidden }},
		{"sandboxed page (Origin null), JSON", http.MethodPost,
			map[string]string{"Origin": "null", "Content-Type": "application/json"},
			func(code int, _ http.Header) bool { return code == http.StatusForbidden }},
		{"a simple-request type with json in a parameter", http.MethodPost,
			map[string]string{"Content-Type": "text/plain; application/json"},
			func(code int, _ http.Header) bool { return code == http.StatusUnsupportedMediaType }},
		{"Origin with credentials naming this host", http.MethodPost,
			map[string]string{"Origin": "http://hub.example@evil.example", "Content-Type": "application/json"},
			func(code int, _ http.Header) bool { return code == http.StatusForbidden }},
	} {
		for _, path := range []string{"/api/broadcast", "/api/publish?channel=c", "/api/send?conn=x"} {
			r := httptest.NewRequest(tc.method, "http://127.0.0.1:8080"+path, strings.NewReader(`{"x":1}`))
			r.RemoteAddr = "127.0.0.1:5555"
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if !tc.refused(w.Code, w.Header()) {
				t.Errorf("%s %s: %d %v", tc.name, path, w.Code, w.Header())
			}
		}
	}
	if l := e.Ledger(); l.Messages.Received["server"] != 0 {
		t.Fatalf("a refused request was accepted: %+v", l.Messages)
	}
}

// TestAttackPprofIsGuarded: with --pprof, /debug/pprof/ is mounted with no
// guard at all: from any address, even when --stats-token protects
// /metrics and /api/stats. /debug/pprof/cmdline then hands out the process's
// command line — with `shardhub serve --pprof --api-token A --token W
// --stats-token S` it answered all three secrets to an anonymous request —
// and profile/trace let anyone make the server profile itself. The profiling
// routes must be behind the stats token when one is set, and answer
// loopback clients only otherwise.
func TestAttackPprofIsGuarded(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	for _, tc := range []struct {
		name   string
		opts   server.Options
		remote string
		auth   string
		open   bool
	}{
		{"stats token set, none sent", server.Options{StatsToken: "look"}, "127.0.0.1:5555", "", false},
		{"stats token set, wrong one", server.Options{StatsToken: "look"}, "127.0.0.1:5555", "Bearer nope", false},
		{"stats token set and sent", server.Options{StatsToken: "look"}, "203.0.113.9:4444", "Bearer look", true},
		{"no token, remote client", server.Options{}, "203.0.113.9:4444", "", false},
		{"no token, loopback client", server.Options{}, "127.0.0.1:5555", "", true},
	} {
		tc.opts.Pprof, tc.opts.Logger, tc.opts.StatsInterval = true, quietLogger(), -1
		h := server.Handler(e, tc.opts)
		for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1", "/debug/pprof/"} {
			r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+path, nil)
			r.RemoteAddr = tc.remote
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if got := w.Code == http.StatusOK; got != tc.open {
				t.Errorf("%s: GET %s answered %d (open %v, want %v)", tc.name, path, w.Code, got, tc.open)
			}
		}
	}
}
