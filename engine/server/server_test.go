package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthMetricsDemo(t *testing.T) {
	t.Parallel()
	degraded := false
	_, addr := startServer(t, engine.Config{}, server.Options{
		Health: func() (bool, map[string]any) { return degraded, map[string]any{"broker": "test"} },
	})
	base := "http://" + addr
	code, body := get(t, base+"/healthz")
	var h map[string]any
	if err := json.Unmarshal([]byte(body), &h); err != nil || code != 200 || h["status"] != "ok" || h["broker"] != "test" {
		t.Fatalf("healthz = %d %s", code, body)
	}
	code, body = get(t, base+"/metrics")
	for _, want := range []string{"shardhub_connections 0", "shardhub_dropped_broadcasts_total 0", "shardhub_forced_disconnects_total 0", `shardhub_errors_total{kind="bad_json"} 0`, "process_resident_memory_bytes"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if code, body = get(t, base+"/"); code != 200 || !strings.Contains(body, `src="/dashboard.js"`) {
		t.Fatalf("dashboard page = %d", code)
	}
	if code, _ = get(t, base+"/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof is on by default: %d", code)
	}
	if code, _ = get(t, base+"/nope"); code != http.StatusNotFound {
		t.Fatalf("unknown path = %d", code)
	}
}

func TestHealthDegraded(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, engine.Config{}, server.Options{
		Health: func() (bool, map[string]any) { return true, map[string]any{"redis": "down"} },
	})
	code, body := get(t, "http://"+addr+"/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"degraded"`) || !strings.Contains(body, `"redis":"down"`) {
		t.Fatalf("healthz = %d %s", code, body)
	}
}
