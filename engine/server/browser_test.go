package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// findBrowser returns a headless-capable Chromium, or skips (fails when
// SHARDHUB_REQUIRE_BROWSER=1, as in CI).
func findBrowser(tb testing.TB) string {
	tb.Helper()
	if p := lookBrowser(); p != "" {
		return p
	}
	if os.Getenv("SHARDHUB_REQUIRE_BROWSER") == "1" {
		tb.Fatal("SHARDHUB_REQUIRE_BROWSER=1 but no chromium on PATH")
	}
	tb.Skip("SKIPPING the browser test: no chromium on PATH (apt-get install chromium)")
	return ""
}

// TestBrowserClient runs a scripted session in headless Chromium against the
// bundled server: the browser's own WebSocket client connects from a page the
// server serves (so origin checks apply as in production), subscribes, gets a
// publication made through the HTTP API with fetch, publishes, sends a private
// message, gets an error frame for bad JSON and close 1009 for an oversize
// message. The page POSTs what it saw to /result.
func TestBrowserClient(t *testing.T) {
	browser := findBrowser(t)
	page, err := os.ReadFile("testdata/browser/session.html")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AllowClientSend: true})
	if err != nil {
		t.Fatal(err)
	}
	addr, results := servePage(t, e, server.Options{}, "/session", page, nil)
	startBrowser(t, browser, "http://"+addr+"/session")

	var raw []byte
	select {
	case raw = <-results:
	case <-time.After(60 * time.Second):
		t.Fatal("the browser reported nothing within 60s")
	}
	var res struct {
		Fail  string                     `json:"fail"`
		Steps map[string]json.RawMessage `json:"steps"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("browser posted %q: %v", raw, err)
	}
	if res.Fail != "" {
		t.Fatalf("browser session failed: %s (steps so far: %s)", res.Fail, raw)
	}
	check := func(step, path, want string) {
		t.Helper()
		var v any
		_ = json.Unmarshal(res.Steps[step], &v)
		checkPath(t, step, v, path, want)
	}
	check("welcome", "a.type", `"welcome"`)
	check("subscribed", "type", `"subscribed"`)
	check("http", "status", `202`)
	check("publishedByHTTP", "data", `{"from":"http"}`)
	check("publishedByHTTP", "channel", `"browser"`)
	check("ack", "type", `"ack"`)
	check("publishedByBrowser", "data", `{"from":"browser"}`)
	check("private", "type", `"private"`)
	check("private", "data", `"psst"`)
	check("badJSON", "code", `"bad_json"`)
	check("oversize", "code", `1009`)
	check("closed", "code", `1000`)
}

// servePage serves e's routes with page at path, a POST /result endpoint
// whose bodies arrive on results, and extra routes; everything stops when the
// test ends.
func servePage(t *testing.T, e *engine.Engine, opts server.Options, path string, page []byte,
	extra map[string]http.HandlerFunc) (addr string, results <-chan []byte) {
	t.Helper()
	res := make(chan []byte, 1)
	mux := http.NewServeMux()
	mux.Handle("/", server.Handler(e, opts))
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("POST /result", func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case res <- b:
		default:
		}
	})
	for pattern, h := range extra {
		mux.HandleFunc(pattern, h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = e.Shutdown(ctx)
	})
	return ln.Addr().String(), res
}
