package server_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// apiCase is one request to the publish API and the status it must get.
type apiCase struct {
	name    string
	host    string // Host; 127.0.0.1:8080 when empty
	remote  string // RemoteAddr; loopback when empty
	headers map[string]string
	want    int
}

func runAPICases(t *testing.T, opts server.Options, cases []apiCase) {
	t.Helper()
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(t.Context()) })
	opts.Logger = quietLogger()
	opts.StatsInterval = -1
	h := server.Handler(e, opts)
	for _, tc := range cases {
		for _, path := range []string{"/api/broadcast", "/api/publish?channel=c", "/api/send?conn=nobody"} {
			host := "127.0.0.1:8080"
			if tc.host != "" {
				host = tc.host
			}
			r := httptest.NewRequest(http.MethodPost, "http://"+host+path, strings.NewReader(`{"x":1}`))
			r.RemoteAddr = "127.0.0.1:5555"
			if tc.remote != "" {
				r.RemoteAddr = tc.remote
			}
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			want := tc.want
			if want == http.StatusAccepted && strings.HasPrefix(path, "/api/send") {
				want = http.StatusNotFound // past the guard: no such connection
			}
			if w.Code != want {
				t.Errorf("%s %s: %d %s, want %d", tc.name, path, w.Code, strings.TrimSpace(w.Body.String()), want)
			}
		}
	}
}

func TestPublishAPIWithoutToken(t *testing.T) {
	t.Parallel()
	jsonCT := map[string]string{"Content-Type": "application/json"}
	runAPICases(t, server.Options{}, []apiCase{
		{"loopback, JSON", "", "", jsonCT, http.StatusAccepted},
		{"IPv6 loopback, JSON", "[::1]:8080", "[::1]:4444", jsonCT, http.StatusAccepted},
		{"Host localhost", "localhost:8080", "", jsonCT, http.StatusAccepted},
		{"Host under .localhost", "hub.localhost", "", jsonCT, http.StatusAccepted},
		{"Host a DNS name (rebinding, or a proxy)", "hub.example", "", jsonCT, http.StatusForbidden},
		{"JSON with a suffix", "", "", map[string]string{"Content-Type": "application/merge-patch+json; charset=utf-8"}, http.StatusAccepted},
		{"remote address", "", "203.0.113.9:4444", jsonCT, http.StatusForbidden},
		{"text/plain (a cross-site form can send it)", "", "", map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"form", "", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"no content type", "", "", nil, http.StatusUnsupportedMediaType},
		{"cross-site fetch", "", "", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same-site, other origin", "", "", map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		{"foreign Origin", "", "", map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"same origin", "", "", map[string]string{"Content-Type": "application/json", "Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}, http.StatusAccepted},
		{"a token nobody asked for is ignored", "", "", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer x"}, http.StatusAccepted},
	})
	runAPICases(t, server.Options{AllowRemoteAPI: true}, []apiCase{
		{"remote address allowed", "hub.example", "203.0.113.9:4444", map[string]string{"Content-Type": "application/json"}, http.StatusAccepted},
		{"remote still JSON only", "", "203.0.113.9:4444", map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"remote still never cross-site", "", "203.0.113.9:4444", map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, http.StatusForbidden},
	})
}

func TestPublishAPIWithToken(t *testing.T) {
	t.Parallel()
	runAPICases(t, server.Options{APIToken: "s3cret"}, []apiCase{
		{"bearer", "hub.example", "203.0.113.9:4444", map[string]string{"Authorization": "Bearer s3cret"}, http.StatusAccepted},
		{"scheme in lower case", "", "", map[string]string{"Authorization": "bearer s3cret"}, http.StatusAccepted},
		{"any content type with a token", "", "", map[string]string{"Authorization": "Bearer s3cret", "Content-Type": "text/plain"}, http.StatusAccepted},
		{"no token", "", "", map[string]string{"Content-Type": "application/json"}, http.StatusUnauthorized},
		{"bare token", "", "", map[string]string{"Authorization": "s3cret"}, http.StatusUnauthorized},
		{"wrong token", "", "", map[string]string{"Authorization": "Bearer s3cre"}, http.StatusUnauthorized},
		{"token with a suffix", "", "", map[string]string{"Authorization": "Bearer s3cretX"}, http.StatusUnauthorized},
		{"basic scheme", "", "", map[string]string{"Authorization": "Basic s3cret"}, http.StatusUnauthorized},
		{"cross-site even with the token", "", "", map[string]string{"Authorization": "Bearer s3cret", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	})
}

func TestStatsToken(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(t.Context()) })
	h := server.Handler(e, server.Options{StatsToken: "look", Logger: quietLogger(), StatsInterval: -1})
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer look", http.StatusOK},
		{"/api/stats", "", http.StatusUnauthorized},
		{"/api/stats", "bearer look", http.StatusOK},
		{"/api/cluster", "Bearer nope", http.StatusUnauthorized},
		{"/healthz", "", http.StatusOK},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("GET %s (%q): %d, want %d", tc.path, tc.auth, w.Code, tc.want)
		}
	}
}

func TestTokenAuth(t *testing.T) {
	t.Parallel()
	auth := server.TokenAuth("t0k")
	for _, tc := range []struct {
		url, header string
		ok          bool
	}{
		{"/ws?token=t0k", "", true},
		{"/ws", "Bearer t0k", true},
		{"/ws", "bearer t0k", true},
		{"/ws", "t0k", false},
		{"/ws?token=t0", "", false},
		{"/ws?token=t0kk", "Bearer t0k", false}, // a wrong query token is not rescued by the header
		{"/ws", "", false},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.url, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		if _, err := auth(r); (err == nil) != tc.ok {
			t.Errorf("%s %q: err %v, want ok=%v", tc.url, tc.header, err, tc.ok)
		}
	}
}

// TestMetricsExposition: every family has one HELP (with text) and one TYPE
// line, labelled series exist at zero before their first event, and the
// output parses as Prometheus text.
func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(t.Context()) })
	h := server.Handler(e, server.Options{Logger: quietLogger(), StatsInterval: -1})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	help, typ := map[string]int{}, map[string]int{}
	series := map[string]bool{}
	for _, line := range strings.Split(w.Body.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			f := strings.Fields(line)
			help[f[2]]++
			if strings.HasPrefix(f[2], "shardhub_") && len(f) < 4 {
				t.Errorf("no HELP text: %q", line)
			}
		case strings.HasPrefix(line, "# TYPE "):
			typ[strings.Fields(line)[2]]++
		case line != "":
			name, _, _ := strings.Cut(line, " ")
			series[name] = true
			fam, _, _ := strings.Cut(name, "{")
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base := strings.TrimSuffix(fam, suffix); typ[fam] == 0 && typ[base] != 0 {
					fam = base // a histogram's or summary's series
				}
			}
			if typ[fam] == 0 {
				t.Errorf("series %s before its TYPE line", name)
			}
		}
	}
	for fam, n := range help {
		if n != 1 || typ[fam] != 1 {
			t.Errorf("family %s: %d HELP and %d TYPE lines", fam, n, typ[fam])
		}
	}
	for _, s := range []string{
		`shardhub_disconnects_total{reason="rate_limited"}`,
		`shardhub_upgrade_failures_total{reason="max_connections"}`,
		`shardhub_api_errors_total{code="cross_site"}`,
		`shardhub_panics_total{where="message"}`,
		`shardhub_messages_dropped_total{reason="queue_full"}`,
		`shardhub_deliveries_dropped_total{reason="slow_consumer"}`,
		`shardhub_messages_received_total{source="client"}`,
	} {
		if !series[s] {
			t.Errorf("series %s missing before its first event", s)
		}
	}
}
