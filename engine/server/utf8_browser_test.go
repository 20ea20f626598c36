package server_test

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// TestBrowserOnlyGetsValidText: invalid UTF-8 published through a binary
// frame, the HTTP API and the server's own Publish reaches a browser on the
// channel as valid text (U+FFFD in place of the bad bytes); the browser keeps
// its connection.
func TestBrowserOnlyGetsValidText(t *testing.T) {
	browser := findBrowser(t)
	page, err := os.ReadFile("testdata/browser/utf8.html")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{}, 1)
	addr, results := servePage(t, e, server.Options{Logger: quietLogger(), StatsInterval: -1}, "/page", page,
		map[string]http.HandlerFunc{"POST /ready": func(http.ResponseWriter, *http.Request) {
			select {
			case ready <- struct{}{}:
			default:
			}
		}})
	startBrowser(t, browser, "http://"+addr+"/page")
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatal("the browser did not subscribe within 60s")
	}

	// 1: a client's binary frame with invalid UTF-8 inside a JSON string.
	pub, _, err := gws.NewClient(&gws.BuiltinEventHandler{}, &gws.ClientOption{Addr: "ws://" + addr + "/ws"})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.NetConn().Close()
	if err := pub.WriteMessage(gws.OpcodeBinary, []byte("{\"type\":\"publish\",\"channel\":\"u\",\"data\":\"a\xff\xfeb\"}")); err != nil {
		t.Fatal(err)
	}
	// 2: an API body that is not JSON and not UTF-8.
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/publish?channel=u", strings.NewReader("c\xc0d"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("API publish: %v %v", resp, err)
	}
	resp.Body.Close()
	// 3: the server's own Publish.
	if err := e.Publish("u", []byte("[\"e\xed\xa0\x80f\"]")); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	select {
	case raw = <-results:
	case <-time.After(60 * time.Second):
		t.Fatal("the browser reported nothing within 60s")
	}
	var res struct {
		Got    []json.RawMessage `json:"got"`
		Closed *int              `json:"closed"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	if res.Closed != nil || len(res.Got) != 3 {
		t.Fatalf("the browser got %s and closed with %v: it must get all three and stay open", res.Got, res.Closed)
	}
	for _, g := range res.Got {
		if !strings.Contains(string(g), "\uFFFD") && !strings.Contains(string(g), `\ufffd`) {
			t.Fatalf("message %s: the invalid bytes should arrive as U+FFFD", g)
		}
	}
}
