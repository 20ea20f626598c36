package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
)

// Helpers for the tests that run shardhub.js in Node and in headless Chromium
// and hear back from them.

// lookBrowser returns a headless-capable Chromium, or "" when there is none.
func lookBrowser() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// lookNode returns node when it and the ws package (make interop-deps) are
// installed, or "" with what is missing.
func lookNode() (node, missing string) {
	node, err := exec.LookPath("node")
	if err != nil {
		return "", "node is not on PATH"
	}
	if _, err := os.Stat("testdata/interop/node_modules/ws"); err != nil {
		return "", "the ws package is not installed (run `make interop-deps`)"
	}
	return node, ""
}

// jsRuntimes returns the JavaScript runtimes present for a test that runs
// shardhub.js in each: node and a browser. A missing one is logged loudly and
// fails the test where CI demands it (SHARDHUB_REQUIRE_INTEROP=1,
// SHARDHUB_REQUIRE_BROWSER=1); with neither the test is skipped.
func jsRuntimes(tb testing.TB) (node, browser string) {
	tb.Helper()
	node, missing := lookNode()
	if node == "" {
		if os.Getenv("SHARDHUB_REQUIRE_INTEROP") == "1" {
			tb.Fatalf("SHARDHUB_REQUIRE_INTEROP=1 but %s", missing)
		}
		tb.Logf("SKIPPING the Node half: %s", missing)
	}
	browser = lookBrowser()
	if browser == "" {
		if os.Getenv("SHARDHUB_REQUIRE_BROWSER") == "1" {
			tb.Fatal("SHARDHUB_REQUIRE_BROWSER=1 but no chromium on PATH")
		}
		tb.Log("SKIPPING the browser half: no chromium on PATH (apt-get install chromium)")
	}
	if node == "" && browser == "" {
		tb.Skip("SKIPPING: neither node nor chromium is installed")
	}
	return node, browser
}

// startBrowser opens url in headless Chromium until the test ends.
func startBrowser(tb testing.TB, browser, url string) {
	tb.Helper()
	cmd := exec.Command(browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--window-size=1280,800", "--user-data-dir="+tb.TempDir(), url)
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	// Chromium runs as a family of processes: its own group, so that all of
	// them end with the test, before its profile directory is removed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
}

// startNode runs node with args (a script and its arguments) and hands each
// line it prints to lines, until the test ends. The channel it returns is
// closed when node's output ends.
func startNode(tb testing.TB, node string, lines func([]byte), args ...string) <-chan struct{} {
	tb.Helper()
	cmd := exec.Command(node, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			lines(sc.Bytes())
		}
	}()
	tb.Cleanup(func() { _ = cmd.Process.Kill(); <-done; _ = cmd.Wait() })
	return done
}

// runNodeSteps runs a node script that prints one JSON object a line, each
// with a "step" name or a "fail" reason, until its output ends or a step
// "done". It calls onStep (when not nil) for each step, on the test's
// goroutine, and returns the steps by name.
func runNodeSteps(tb testing.TB, node string, onStep func(step string), args ...string) map[string]map[string]any {
	tb.Helper()
	lines := make(chan []byte, 64)
	ended := startNode(tb, node, func(b []byte) { lines <- bytes.Clone(b) }, args...)
	steps := map[string]map[string]any{}
	deadline := time.After(waitLong)
	for {
		select {
		case b := <-lines:
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				tb.Fatalf("node printed %q", b)
			}
			if f, ok := m["fail"]; ok {
				tb.Fatalf("node client failed: %v (steps so far: %v)", f, steps)
			}
			step, _ := m["step"].(string)
			steps[step] = m
			if onStep != nil {
				onStep(step)
			}
			if step == "done" {
				return steps
			}
		case <-ended:
			if len(lines) > 0 {
				continue // read what it printed last
			}
			return steps
		case <-deadline:
			tb.Fatalf("node did not finish within %v; steps: %v", waitLong, steps)
		}
	}
}

// shutdownOnCleanup shuts e down when the test ends.
func shutdownOnCleanup(tb testing.TB, e *engine.Engine) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
}

// fetchClientLib saves the shardhub.js served at addr as an .mjs file (so Node
// loads it as an ES module) and returns its path: the tests run the very
// bytes the server serves.
func fetchClientLib(tb testing.TB, addr string) string {
	tb.Helper()
	resp, err := http.Get("http://" + addr + "/shardhub.js")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /shardhub.js: %d %v", resp.StatusCode, err)
	}
	p := filepath.Join(tb.TempDir(), "shardhub.mjs")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// jsReport is what a JavaScript client reports about itself.
type jsReport struct {
	Ready    bool
	Conn     string
	Progress int
	States   []string
	Done     bool
	Result   json.RawMessage
}

// reports gathers the observations of the JavaScript clients of a test, by
// client ("node", "browser"), from Node's stdout and from the browser's
// POSTs to its own HTTP address (which outlives the server under test).
type reports struct {
	tb   testing.TB
	addr string // where the browser POSTs: http://addr/report

	mu   sync.Mutex // guards the fields below.
	who  map[string]*jsReport
	fail string
	log  []string
}

func newReports(tb testing.TB) *reports {
	tb.Helper()
	r := &reports{tb: tb, who: make(map[string]*jsReport)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.add(b)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return r
}

// expect registers the clients that must report.
func (r *reports) expect(names ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		r.who[n] = &jsReport{}
	}
}

// add records one JSON observation.
func (r *reports) add(line []byte) {
	var o struct {
		Who    string          `json:"who"`
		Event  string          `json:"event"`
		Fail   string          `json:"fail"`
		Conn   string          `json:"conn"`
		N      int             `json:"n"`
		State  string          `json:"state"`
		Result json.RawMessage `json:"result"`
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.log) < 200 {
		r.log = append(r.log, string(line))
	}
	if err := json.Unmarshal(line, &o); err != nil {
		r.fail = fmt.Sprintf("unreadable report %q", line)
		return
	}
	if o.Fail != "" {
		r.fail = o.Who + ": " + o.Fail
		return
	}
	c := r.who[o.Who]
	if c == nil {
		return
	}
	switch o.Event {
	case "ready":
		c.Ready, c.Conn = true, o.Conn
	case "progress":
		c.Progress = max(c.Progress, o.N)
	case "state":
		c.States = append(c.States, o.State)
	case "done":
		c.Done, c.Result = true, o.Result
	}
}

// wait waits until cond holds for every expected client, failing the test
// when one reports a failure or after waitLong.
func (r *reports) wait(what string, cond func(*jsReport) bool) {
	r.tb.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		r.mu.Lock()
		fail, all := r.fail, true
		for _, c := range r.who {
			all = all && cond(c)
		}
		r.mu.Unlock()
		if fail != "" {
			r.tb.Fatalf("a JavaScript client failed while waiting for %s: %s\nreports:\n%s", what, fail, r.dump())
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			r.tb.Fatalf("not every client reached %q within %v\nreports:\n%s", what, waitLong, r.dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// result decodes the final result of client who into v.
func (r *reports) result(who string, v any) {
	r.tb.Helper()
	r.mu.Lock()
	raw := r.who[who].Result
	r.mu.Unlock()
	if err := json.Unmarshal(raw, v); err != nil {
		r.tb.Fatalf("%s result %s: %v", who, raw, err)
	}
}

func (r *reports) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, "\n")
}
