package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
	"github.com/shardhub/shardhub/loadtest/report"
)

// testServer serves a real engine with the bundled HTTP API and returns its
// ws:// URL.
func testServer(tb testing.TB) string {
	tb.Helper()
	return testServerWrapped(tb, func(h http.Handler) http.Handler { return h })
}

// testServerWrapped is testServer with the bundled handler wrapped by wrap.
func testServerWrapped(tb testing.TB, wrap func(http.Handler) http.Handler) string {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(engine.Config{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(wrap(server.Handler(e, server.Options{Logger: log})))
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// checkReports reads the JSON report at path and the HTML beside it.
func checkReports(tb testing.TB, path string, conns int) *report.Report {
	tb.Helper()
	r, err := report.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if m, ok := r.Metric("conns_connected"); !ok || int(m.Value) != conns {
		tb.Errorf("conns_connected = %+v", m)
	}
	if m, ok := r.Metric("loss_pct"); !ok || m.Value != 0 {
		tb.Errorf("loss_pct = %+v", m)
	}
	if m, ok := r.Metric("loadgen_cpu_ns_per_delivery"); !ok || m.Value <= 0 {
		tb.Errorf("loadgen_cpu_ns_per_delivery = %+v", m)
	}
	html, err := os.ReadFile(strings.TrimSuffix(path, ".json") + ".html")
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.Contains(html, []byte("<svg")) || bytes.Contains(html, []byte("<script")) {
		tb.Error("HTML report has no chart or has a script")
	}
	return r
}

func TestLoadtestCommand(t *testing.T) {
	t.Parallel()
	url := testServer(t)
	out := filepath.Join(t.TempDir(), "run.json")
	var so, se bytes.Buffer
	code := loadtestMain([]string{
		"--url", url, "--conns", "20", "--rate", "10", "--duration", "500ms", "--settle", "100ms",
		"--interval", "200ms", "--ready-match", `"type":"welcome"`, "--out", out, "--name", "cli",
	}, &so, &se)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, so.String(), se.String())
	}
	r := checkReports(t, out, 20)
	if r.Name != "cli" || r.Kind != report.KindLoadtest {
		t.Errorf("name %q kind %q", r.Name, r.Kind)
	}
	if !regexp.MustCompile(`(?m)^measure +[0-9.]+s conns 20 pub `).MatchString(se.String()) {
		t.Errorf("no plain progress lines on a non-terminal stderr:\n%s", se.String())
	}
	if !strings.Contains(so.String(), "deliveries_per_sec") || !strings.Contains(so.String(), out) {
		t.Errorf("summary incomplete:\n%s", so.String())
	}
}

func TestLoadtestCommandRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"remote target", []string{"--url", "ws://10.20.30.40:8080/ws", "--conns", "1"}, "not a loopback"},
		{"remote API", []string{"--url", "ws://127.0.0.1:1/ws", "--api", "http://192.0.2.1", "--conns", "1"}, "not a loopback"},
		{"no URL", []string{"--conns", "1"}, "shardhub loadtest: --url: at least one ws:// URL is required"},
		{"negative conns", []string{"--url", "ws://127.0.0.1:1/ws", "--conns", "-1"}, "shardhub loadtest: --conns: negative"},
		{"stray argument", []string{"--url", "ws://127.0.0.1:1/ws", "now", "--conns", "1"}, `unexpected argument "now"`},
		{"duration without a unit", []string{"--url", "ws://127.0.0.1:1/ws", "--duration", "5"}, "want a duration with a unit, e.g. 5s"},
		{"bad scenario", []string{"--url", "ws://127.0.0.1:1/ws", "--scenario", "flood"}, `shardhub loadtest: --scenario: "flood" is not broadcast`},
		{"bad source IPs", []string{"--url", "ws://127.0.0.1:1/ws", "--source-ips", "127.0.0.9-127.0.0.1"}, "bad range"},
		{"bad I/O model", []string{"--url", "ws://127.0.0.1:1/ws", "--io", "uring"}, `shardhub loadtest: --io: "uring" is neither goroutine nor epoll`},
		{"too many conns for one process", []string{"--url", "ws://127.0.0.1:1/ws", "--conns", "1000000"}, "--workers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var so, se bytes.Buffer
			code := loadtestMain(append(tt.args, "--out", filepath.Join(dir, "r.json")), &so, &se)
			if code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, se.String())
			}
			if !strings.Contains(se.String(), tt.msg) {
				t.Errorf("stderr lacks %q: %s", tt.msg, se.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "r.json")); err == nil {
				t.Error("a refused run wrote a report")
			}
		})
	}
}

// TestLoadtestWorkersBinary builds the real binary and runs `shardhub loadtest
// --workers 2`, so the parent re-executes itself as workers exactly as users
// run it.
func TestLoadtestWorkersBinary(t *testing.T) {
	t.Parallel()
	bin := shardhubBinary(t)
	dir := t.TempDir()
	url := testServer(t)
	out := filepath.Join(dir, "workers.json")
	cmd := exec.Command(bin, "loadtest", "--url", url, "--conns", "40", "--workers", "2", "--rate", "10",
		"--duration", "1s", "--settle", "100ms", "--interval", "250ms", "--ready-match", `"type":"welcome"`,
		"--source-ips", "127.0.0.2-127.0.0.5", "--out", out)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
	}
	r := checkReports(t, out, 40)
	if m, _ := r.Metric("deliveries"); m.Value != 10*40 {
		t.Errorf("deliveries = %v, want %d", m.Value, 10*40)
	}
	found := false
	for _, n := range r.Notes {
		found = found || strings.Contains(n, "2 worker processes")
	}
	if !found {
		t.Errorf("notes do not mention the workers: %v", r.Notes)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// lossyServer serves a real engine whose /api/broadcast accepts every publish
// (202) but forwards only every other one: the accepted others are lost.
func lossyServer(tb testing.TB) string {
	tb.Helper()
	var n atomic.Int64
	return testServerWrapped(tb, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/broadcast" && n.Add(1)%2 == 0 {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusAccepted)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
}

// TestLoadtestExitCodes: a failed run exits non-zero, with the code of the
// first failed check, and still writes its reports with the verdict first.
func TestLoadtestExitCodes(t *testing.T) {
	t.Parallel()
	notFound := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notFound.Close)
	common := []string{"--rate", "20", "--duration", "500ms", "--settle", "50ms", "--drain", "2s", "--interval", "200ms",
		"--ready-match", `"type":"welcome"`}
	tests := []struct {
		name   string
		args   func() []string
		code   int
		stderr string
	}{
		{"every connection refused", func() []string {
			return []string{"--url", "ws://" + closedPort(t) + "/ws", "--conns", "10", "--ready-timeout", "1s"}
		}, exitConnFailures, "10 of 10 connections failed (100%, limit 1%): 10 did not open (refused 10)"},
		{"every publish answered 404", func() []string {
			return []string{"--url", testServer(t), "--api", notFound.URL, "--conns", "5"}
		}, exitPublishFailures, "publishes failed (100%, limit 1%): http_404"},
		{"publish failures within their limit", func() []string {
			return []string{"--url", testServer(t), "--api", notFound.URL, "--conns", "5", "--max-publish-failures", "100%"}
		}, 0, ""},
		{"accepted publishes lost", func() []string {
			return []string{"--url", lossyServer(t), "--conns", "5"}
		}, exitLoss, "expected deliveries lost (50%, limit 0%)"},
		{"loss within its limit", func() []string {
			return []string{"--url", lossyServer(t), "--conns", "5", "--max-loss", "60"}
		}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "run.json")
			var so, se bytes.Buffer
			code := loadtestMain(append(append(tt.args(), common...), "--out", out), &so, &se)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, so.String(), se.String())
			}
			if !strings.Contains(se.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, se.String())
			}
			r, err := report.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if r.Outcome == nil || r.Outcome.Pass != (tt.code == 0) || !strings.HasPrefix(so.String(), r.Outcome.Summary) {
				t.Errorf("outcome %+v; summary does not start with it:\n%s", r.Outcome, so.String())
			}
		})
	}
}
