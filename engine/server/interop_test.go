package server_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// requireInterop skips when the Node client is not installed, unless CI demands it.
func requireInterop(tb testing.TB) string {
	tb.Helper()
	node, missing := lookNode()
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
	e := newEngine(tb, cfg)
	return e, startEngine(tb, e, opts, nil)
}

// TestNodeWSClient drives the server with the npm "ws" library: connect,
// subscribe, receive publications from Go and from another Node client, private
// messages, error frames and the 1009 close.
func TestNodeWSClient(t *testing.T) {
	node := requireInterop(t)
	e, addr := startServer(t, engine.Config{AllowClientSend: true}, server.Options{})
	steps := runNodeSteps(t, node, func(step string) {
		if step == "ready" { // the script waits for this publication next
			if err := e.Publish("interop", []byte(`{"from":"go"}`)); err != nil {
				t.Error(err)
			}
		}
	}, filepath.Join("testdata", "interop", "client.js"), "ws://"+addr+"/ws")
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
