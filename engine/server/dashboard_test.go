package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// TestDashboardBrowser opens the dashboard in headless Chromium, under its
// production CSP, with a driver script injected before its own: 50 clients
// connect and the count on the page follows; the try-it panel subscribes and
// publishes, and a Go client subscribed to the channel gets the publication;
// the page logs no error and fits 1280×800.
func TestDashboardBrowser(t *testing.T) {
	t.Parallel()
	browser := findBrowser(t)
	driver, err := os.ReadFile("testdata/browser/dashboard-driver.js")
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, engine.Config{Shards: 4})
	h := server.Handler(e, server.Options{StatsInterval: -1}) // serves the page for /dash
	results := make(chan []byte, 4)
	addr := startEngine(t, e, server.Options{}, func(mux *http.ServeMux) { // stats every second, as in production
		// The dashboard as served, with the driver's <script> first in <head>.
		mux.HandleFunc("GET /dash", func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/", nil)
			req.Host = r.Host
			h.ServeHTTP(rec, req)
			page := strings.Replace(rec.Body.String(), `<meta charset="utf-8">`,
				`<meta charset="utf-8"><script src="/dash-driver.js"></script>`, 1)
			for _, k := range []string{"Content-Type", "Content-Security-Policy"} {
				w.Header().Set(k, rec.Header().Get(k))
			}
			_, _ = io.WriteString(w, page)
		})
		mux.HandleFunc("GET /dash-driver.js", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/javascript")
			_, _ = w.Write(driver)
		})
		mux.HandleFunc("POST /result", func(_ http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			results <- b
		})
	})

	watcher := dialWS(t, addr)
	watcher.subscribe("panel-test")
	const clients = 50
	want := clients + 2 // and the watcher, and the page itself
	startBrowser(t, browser, "http://"+addr+"/dash?want="+strconv.Itoa(want)+"&wait="+strconv.Itoa(int(waitLong/time.Second)))

	next := func() map[string]any {
		t.Helper()
		select {
		case b := <-results:
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("driver posted %q", b)
			}
			if f, ok := m["fail"]; ok {
				t.Fatalf("dashboard driver: %v\nerrors: %v\nlog:\n%v", f, m["errors"], m["log"])
			}
			return m
		case <-time.After(waitLong):
			t.Fatalf("the dashboard driver reported nothing within %v", waitLong)
		}
		return nil
	}
	if m := next(); m["event"] != "connected" {
		t.Fatalf("driver: %v, want connected", m)
	}
	for range clients {
		dialWS(t, addr)
	}
	var res struct {
		Seen       []string   `json:"seen"`
		Send       string     `json:"send"`
		SendTarget string     `json:"sendTarget"`
		Broker     string     `json:"broker"`
		Instances  string     `json:"instances"`
		Cluster    [][]string `json:"cluster"`
		Drops      [][]string `json:"drops"`
		Tiles      []string   `json:"tiles"`
		Fits       struct{ Width, Height, Vw, Vh int }
		Log        string   `json:"log"`
		Errors     []string `json:"errors"`
	}
	b, _ := json.Marshal(next())
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard: counts seen %v, broker %q, cluster %v, tiles %v, page %+v", res.Seen, res.Broker, res.Cluster, res.Tiles, res.Fits)

	if len(res.Errors) > 0 {
		t.Errorf("the page logged errors: %q", res.Errors)
	}
	if len(res.Seen) < 2 || res.Seen[len(res.Seen)-1] != strconv.Itoa(want) {
		t.Errorf("connection counts shown %v: want it to move up to %d", res.Seen, want)
	}
	if res.Broker != "single node" || res.Instances != "1" {
		t.Errorf("broker %q, instances %q: want single node, 1", res.Broker, res.Instances)
	}
	if len(res.Cluster) != 1 || res.Cluster[0][0] != e.InstanceID() || res.Cluster[0][1] != strconv.Itoa(want) {
		t.Errorf("cluster table %v: want one row, %s with %d connections", res.Cluster, e.InstanceID(), want)
	}
	if !slices.ContainsFunc(res.Drops, func(r []string) bool { return r[0] == "evicted: slow consumers" && r[1] == "0" }) {
		t.Errorf("drops table %v: want the slow-consumer evictions, 0", res.Drops)
	}
	if got := watcher.next(func(m map[string]any) bool { return m["type"] == "message" }); got["channel"] != "panel-test" ||
		!strings.Contains(mustJSON(got["data"]), `"from":"panel"`) {
		t.Errorf("the watcher got %v, want the panel's publication", got)
	}
	if res.SendTarget == "" || (res.Send != "sent" && res.Send != "refused") {
		t.Errorf("send to %q: outcome %q, want sent or refused, shown in the log:\n%s", res.SendTarget, res.Send, res.Log)
	}
	if res.Fits.Width > res.Fits.Vw || res.Fits.Height > res.Fits.Vh {
		t.Errorf("the page is %dx%d in a %dx%d window: want no scrolling at 1280×800", res.Fits.Width, res.Fits.Height, res.Fits.Vw, res.Fits.Vh)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
