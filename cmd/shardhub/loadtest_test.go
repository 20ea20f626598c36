package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(engine.Config{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(server.Handler(e, server.Options{Logger: log}))
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
	if !strings.Contains(se.String(), "[measure") {
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
		{"no URL", []string{"--conns", "1"}, "URLs"},
		{"bad scenario", []string{"--url", "ws://127.0.0.1:1/ws", "--scenario", "flood"}, "Scenario"},
		{"bad source IPs", []string{"--url", "ws://127.0.0.1:1/ws", "--source-ips", "127.0.0.9-127.0.0.1"}, "bad range"},
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
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "shardhub")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
