package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
	"github.com/shardhub/shardhub/engine/server"
)

// TestClientJSNode drives shardhub.js, as the server serves it, from Node:
// replies settle promises, errors reject them with the server's code, handlers
// get their channel's publications, requests made before the connection wait
// for it, close() rejects what waits.
func TestClientJSNode(t *testing.T) {
	t.Parallel()
	node := requireInterop(t)
	e, err := engine.New(engine.Config{
		Logger:       quietLogger(),
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("who"), nil },
		Authorizer: func(_ context.Context, req engine.AuthRequest) error {
			switch {
			case req.Action == engine.ActionSend && req.Target != nil && req.Target.UserID == "a":
				return errors.New("a takes no private messages")
			case req.Action == engine.ActionSubscribe && len(req.Channel) > 7 && req.Channel[:7] == "secret.":
				return errors.New("secret")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := startEngine(t, e, server.Options{Logger: quietLogger()}, nil)
	lib := fetchClientLib(t, addr)

	steps := runNodeSteps(t, node, nil, filepath.Join("testdata", "interop", "clientlib.mjs"), lib, "ws://"+addr+"/ws")
	if _, ok := steps["done"]; !ok {
		t.Fatalf("node ended before its last step; steps: %v", steps)
	}
	check := func(step, path, want string) {
		t.Helper()
		checkPath(t, step, steps[step], path, want)
	}
	check("connected", "states", `["connecting","connected"]`)
	check("connected", "state", `"connected"`)
	check("subscribed", "active", `true`)
	check("published", "channel", `"news"`)
	check("published", "data", `{"n":1}`)
	check("published", "handler", `[{"n":1}]`)
	check("bad-channel", "isError", `true`)
	check("bad-channel", "code", `"bad_channel"`)
	check("send-denied", "code", `"forbidden"`)
	check("send-denied", "reason", `"a takes no private messages"`)
	check("send-allowed", "data", `"hello b"`)
	check("send-allowed", "fromIsA", `true`)
	check("subscribe-denied", "code", `"forbidden"`)
	check("subscribe-denied", "kept", `false`)
	check("unsubscribed", "channel", `"other"`)
	check("unsubscribed", "data", `{"n":3}`)
	check("unsubscribed", "news", `[{"n":1}]`)
	check("queued", "channel", `"queued"`)
	check("queued", "data", `"early"`)
	check("closed", "code", `"closed"`)
	check("closed", "isClosed", `true`)
}

// recoveryResult is what recover.mjs reports at the end.
type recoveryResult struct {
	States        []string          `json:"states"`
	Subscribed    []subscribedEvent `json:"subscribed"`
	Resync        []string          `json:"resync"`
	Errors        []string          `json:"errors"`
	Got           int               `json:"got"`
	Last          int               `json:"last"`
	Dups          int               `json:"dups"`
	Gaps          [][2]int          `json:"gaps"`
	Queued        string            `json:"queued"`
	QueuedArrived bool              `json:"queuedArrived"`
}

// subscribedEvent is a "subscribed" event of shardhub.js.
type subscribedEvent struct {
	Channel      string `json:"channel"`
	Recovered    *bool  `json:"recovered"`
	Resubscribed bool   `json:"resubscribed"`
}

// runJSClients starts recover.mjs in Node and in Chromium (those present)
// against the child server c and returns who reports.
func runJSClients(t *testing.T, c *child, mode string, total int) (*reports, []string) {
	t.Helper()
	node, browser := jsRuntimes(t)
	r := newReports(t)
	var who []string
	if node != "" {
		who = append(who, "node")
	}
	if browser != "" {
		who = append(who, "browser")
	}
	r.expect(who...)
	if node != "" {
		lib := fetchClientLib(t, c.addr)
		startNode(t, node, r.add, filepath.Join("testdata", "interop", "recover-node.mjs"),
			lib, "ws://"+c.addr+"/ws", mode, strconv.Itoa(total))
	}
	if browser != "" {
		q := url.Values{"mode": {mode}, "total": {strconv.Itoa(total)}, "report": {"http://" + r.addr + "/report"}}
		startBrowser(t, browser, "http://"+c.addr+"/test/recover.html?"+q.Encode())
	}
	r.wait("ready", func(c *jsReport) bool { return c.Ready })
	return r, who
}

// TestClientJSRestart kills the server (SIGKILL) under connected shardhub.js
// clients, in Node and in Chromium, and starts it again: they reconnect by
// themselves, subscribe again, and a publish made while the server was down
// waits for the new connection and reaches the resubscribed channel.
func TestClientJSRestart(t *testing.T) {
	t.Parallel()
	c := startChild(t, "", "solo")
	r, who := runJSClients(t, c, "restart", 0)
	c.kill()
	r.wait("disconnected", func(c *jsReport) bool { return slices.Contains(c.States, "disconnected") })
	c.start()
	r.wait("done", func(c *jsReport) bool { return c.Done })
	for _, w := range who {
		var res recoveryResult
		r.result(w, &res)
		if !res.QueuedArrived || res.Queued != "acked" {
			t.Errorf("%s: the publish made while disconnected: arrived %v, promise %q; want arrived and acked", w, res.QueuedArrived, res.Queued)
		}
		if !slices.ContainsFunc(res.Subscribed, func(s subscribedEvent) bool { return s.Channel == "news" && s.Resubscribed }) {
			t.Errorf("%s: no resubscription to news: %+v", w, res.Subscribed)
		}
		if i := slices.Index(res.States, "disconnected"); i < 0 || !slices.Contains(res.States[i:], "connected") {
			t.Errorf("%s: states %v: want connected again after disconnected", w, res.States)
		}
	}
}

// TestClientJSHistoryRecovery is the promise of shardhub.js on channels with
// history: a server instance in a Redis cluster is killed mid-stream and
// restarted while another instance keeps publishing; every publication of
// the channel reaches the clients (Node and Chromium) exactly once, in
// order. A channel whose history is too short for the outage ends in a
// "resync" event.
func TestClientJSHistoryRecovery(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	pub, _, err := newBrokeredEngine(red.URL(), "publisher", quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	shutdownOnCleanup(t, pub)
	c := startChild(t, red.URL(), "s1")
	const total = 400
	r, who := runJSClients(t, c, "history", total)

	seq := 0
	publish := func(upTo int, pace time.Duration) {
		for seq < upTo {
			seq++
			if err := pub.Publish("hist.a", []byte(fmt.Sprintf(`{"seq":%d}`, seq))); err != nil {
				t.Errorf("publish %d: %v", seq, err)
			}
			if seq%10 == 0 {
				if err := pub.Publish("tiny.a", []byte(fmt.Sprintf(`{"seq":%d}`, seq))); err != nil {
					t.Errorf("publish tiny %d: %v", seq, err)
				}
			}
			time.Sleep(pace)
		}
	}
	// Mid-stream: the clients are receiving while the server dies.
	streaming := make(chan struct{})
	go func() {
		defer close(streaming)
		publish(150, 5*time.Millisecond)
	}()
	r.wait("50 messages", func(c *jsReport) bool { return c.Progress >= 50 })
	c.kill()
	<-streaming
	// While it is down: more of hist.a, and more of tiny.a than it keeps.
	publish(200, 0)
	for i := range 10 {
		if err := pub.Publish("tiny.a", []byte(fmt.Sprintf(`{"outage":%d}`, i))); err != nil {
			t.Errorf("publish tiny: %v", err)
		}
	}
	c.start()
	publish(total, 5*time.Millisecond)
	r.wait("done", func(c *jsReport) bool { return c.Done })

	for _, w := range who {
		var res recoveryResult
		r.result(w, &res)
		if res.Got != total || res.Last != total || res.Dups != 0 || len(res.Gaps) != 0 {
			t.Errorf("%s: got %d publications of hist.a, last %d, %d duplicates, gaps %v; want each of 1…%d once, in order",
				w, res.Got, res.Last, res.Dups, res.Gaps, total)
		}
		recovered := false
		for _, s := range res.Subscribed {
			if s.Channel == "hist.a" && s.Resubscribed && s.Recovered != nil && *s.Recovered {
				recovered = true
			}
		}
		if !recovered {
			t.Errorf("%s: hist.a was not resubscribed with recovered:true: %+v", w, res.Subscribed)
		}
		if !slices.Contains(res.Resync, "tiny.a") {
			t.Errorf("%s: no resync event for tiny.a (history 5, 10+ missed): resync %v, subscribed %+v", w, res.Resync, res.Subscribed)
		}
		if slices.Contains(res.Resync, "hist.a") {
			t.Errorf("%s: resync for hist.a, whose history covers the outage", w)
		}
		if i := slices.Index(res.States, "disconnected"); i < 0 || !slices.Contains(res.States[i:], "connected") {
			t.Errorf("%s: states %v: want connected again after disconnected", w, res.States)
		}
	}
}
