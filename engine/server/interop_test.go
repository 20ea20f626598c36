package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// requireInterop skips when the Node client is not installed, unless CI demands it.
func requireInterop(tb testing.TB) string {
	tb.Helper()
	node, err := exec.LookPath("node")
	missing := ""
	if err != nil {
		missing = "node is not on PATH"
	} else if _, err := os.Stat("testdata/interop/node_modules/ws"); err != nil {
		missing = "the ws package is not installed (run `make interop-deps`)"
	}
	if missing == "" {
		return node
	}
	if os.Getenv("SHARDHUB_REQUIRE_INTEROP") == "1" {
		tb.Fatalf("SHARDHUB_REQUIRE_INTEROP=1 but %s", missing)
	}
	tb.Skipf("SKIPPING the non-Go client interop test: %s", missing)
	return ""
}

func startServer(tb testing.TB, cfg engine.Config, opts server.Options) (*engine.Engine, string) {
	tb.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: server.Handler(e, opts)}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = e.Shutdown(ctx)
	})
	return e, ln.Addr().String()
}

// TestNodeWSClient drives the server with the npm "ws" library: connect,
// subscribe, receive publications from Go and from another Node client, private
// messages, error frames and the 1009 close.
func TestNodeWSClient(t *testing.T) {
	node := requireInterop(t)
	e, addr := startServer(t, engine.Config{}, server.Options{})
	cmd := exec.Command(node, filepath.Join("testdata", "interop", "client.js"), "ws://"+addr+"/ws")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	steps := map[string]map[string]any{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("node printed %q", sc.Text())
		}
		if f, ok := line["fail"]; ok {
			t.Fatalf("node client failed: %v (steps so far: %v)", f, steps)
		}
		step, _ := line["step"].(string)
		steps[step] = line
		if step == "ready" {
			if err := e.Publish("interop", []byte(`{"from":"go"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node exited: %v; steps: %v", err, steps)
	}
	check := func(step, path, want string) {
		t.Helper()
		checkPath(t, step, steps[step], path, want)
	}
	check("welcome", "a.type", `"welcome"`)
	check("subscribed", "msg.type", `"subscribed"`)
	check("published-by-go", "msg.data", `{"from":"go"}`)
	check("published-by-go", "msg.channel", `"interop"`)
	check("ack", "msg", `{"id":"p1","type":"ack"}`)
	check("published-by-node", "msg.data", `{"from":"node"}`)
	check("private", "msg.type", `"private"`)
	check("private", "msg.data", `"psst"`)
	check("bad-json", "msg.code", `"bad_json"`)
	check("oversize", "close.code", `1009`)
	check("closed", "close.code", `1000`)
}

// checkPath compares the JSON encoding of the value at the dot-separated path
// inside v (decoded JSON) with want.
func checkPath(t *testing.T, step string, v any, path, want string) {
	t.Helper()
	for _, k := range strings.Split(path, ".") {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	if got, _ := json.Marshal(v); string(got) != want {
		t.Errorf("%s %s = %s, want %s", step, path, got, want)
	}
}
