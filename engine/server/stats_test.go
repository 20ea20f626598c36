package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
	"github.com/shardhub/shardhub/engine/server"
)

func newEngine(tb testing.TB, cfg engine.Config) *engine.Engine {
	tb.Helper()
	cfg.Logger = quietLogger()
	e, err := engine.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	shutdownOnCleanup(tb, e)
	return e
}

// waitFor polls cond until it holds or waitLong passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, waitLong)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStatsPublisher subscribes to $sys.stats like the dashboard and reads
// the engine's state and rates from it.
func TestStatsPublisher(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{Shards: 3})
	addr := startEngine(t, e, server.Options{StatsInterval: 50 * time.Millisecond}, nil)
	c := dialWS(t, addr)
	c.subscribe(server.StatsChannel)
	other := dialWS(t, addr)

	m := c.stats(func(m statsMsg) bool { return m.Connections == 2 })
	if m.Instance != e.InstanceID() || len(m.Shards) != 3 || m.Time <= 0 || m.Memory.HeapInuse == 0 {
		t.Fatalf("stats message %+v: want instance %q, 3 shards, a time and memory", m, e.InstanceID())
	}
	if sum := m.Shards[0] + m.Shards[1] + m.Shards[2]; sum != 2 {
		t.Fatalf("shards %v sum to %d, want the 2 connections", m.Shards, sum)
	}
	if m.Broker.Mode != "single" || m.Broker.State != "up" || m.Cluster != nil {
		t.Fatalf("broker %+v cluster %v: want a single node, up, no cluster", m.Broker, m.Cluster)
	}

	// Traffic shows in the rates of a later message.
	other.subscribe("x")
	for i := range 20 {
		if err := e.Publish("x", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	other.send(map[string]any{"type": "publish", "channel": "x", "data": 1})
	m = c.stats(func(m statsMsg) bool { return m.Rates.MessagesIn > 0 })
	c.stats(func(m statsMsg) bool { return m.Rates.Deliveries > 0 && m.Rates.MessagesOut > 0 })
	if m.Rates.Interval <= 0 {
		t.Fatalf("rates %+v: no interval", m.Rates)
	}

}

// TestStatsPublisherCluster: with a broker, the message carries its health and
// the cluster's instances.
func TestStatsPublisherCluster(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	addr := startEngine(t, e, server.Options{
		StatsInterval: 50 * time.Millisecond,
		Health:        func() (bool, map[string]any) { return true, map[string]any{"redis": "down"} },
		Cluster: func(context.Context) (any, error) {
			return map[string]any{"instances": []map[string]any{{"id": "other", "connections": 3, "host": "db7", "pid": 42}}}, nil
		},
	}, nil)
	c := dialWS(t, addr)
	c.subscribe(server.StatsChannel)
	m := c.stats(func(statsMsg) bool { return true })
	if m.Broker.Mode != "cluster" || m.Broker.State != "degraded" || m.Broker.Detail["redis"] != "down" {
		t.Fatalf("broker %+v: want cluster, degraded, redis down", m.Broker)
	}
	if len(m.Cluster) != 1 || m.Cluster[0]["id"] != "other" || m.Cluster[0]["connections"] != float64(3) || len(m.Cluster[0]) != 2 {
		t.Fatalf("cluster %v: want the registry's instance, id and connections only (no host, no pid)", m.Cluster)
	}
}

// TestStatsPublisherQuietAndStop: on a single node nothing is published while
// no one subscribes; the publisher ends with the engine, and a negative
// interval disables it.
func TestStatsPublisherQuietAndStop(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	server.Handler(e, server.Options{StatsInterval: 5 * time.Millisecond})
	server.Handler(e, server.Options{StatsInterval: 5 * time.Millisecond}) // a second Handler adds no second publisher
	waitFor(t, "five ticks", func() bool { return server.StatsTicks(e) >= 5 })
	if n := e.Stats().Publications; n != 0 {
		t.Fatalf("%d publications with no subscriber", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publisher to stop", func() bool { return server.StatsTicks(e) == -1 })

	off := newEngine(t, engine.Config{})
	server.Handler(off, server.Options{StatsInterval: -1})
	if server.StatsTicks(off) != -1 {
		t.Fatal("a negative StatsInterval started a publisher")
	}
}

// TestWebAssets checks how the dashboard and the client library are served.
func TestWebAssets(t *testing.T) {
	t.Parallel()
	e := newEngine(t, engine.Config{})
	addr := startEngine(t, e, server.Options{StatsInterval: -1}, nil)
	for _, tc := range []struct {
		name, path, ctype, contains string
	}{
		{"dashboard", "/", "text/html; charset=utf-8", `<script type="module" src="/dashboard.js">`},
		{"dashboard script", "/dashboard.js", "text/javascript; charset=utf-8", `from "/shardhub.js"`},
		{"dashboard style", "/dashboard.css", "text/css; charset=utf-8", "grid-template-columns"},
		{"client library", "/shardhub.js", "text/javascript; charset=utf-8", "export class Client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get("http://" + addr + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.contains) {
				t.Fatalf("GET %s = %d %q, body has %q: %v", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"),
					tc.contains, strings.Contains(body, tc.contains))
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("no nosniff")
			}
			etag := resp.Header.Get("ETag")
			req, _ := http.NewRequest("GET", "http://"+addr+tc.path, nil)
			req.Header.Set("If-None-Match", etag)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readAll(t, resp)
			if etag == "" || resp.StatusCode != http.StatusNotModified {
				t.Errorf("revalidation with ETag %q = %d, want 304", etag, resp.StatusCode)
			}
		})
	}
	resp, err := http.Get("http://" + addr + "/shardhub.js")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("shardhub.js Access-Control-Allow-Origin %q: pages on other origins cannot import it", got)
	}
	if resp, err = http.Get("http://" + addr + "/"); err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("the dashboard is readable cross-origin")
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "ws://"+addr) {
		t.Errorf("dashboard CSP %q: want default-src 'self' and this host's ws://", csp)
	}
}

func readAll(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		tb.Fatal(err)
	}
	return b.String()
}

// TestStatsPublisherRedisCluster: with the Redis broker every instance's
// stats reach the subscribers of every instance, so one dashboard shows the
// whole cluster.
func TestStatsPublisherRedisCluster(t *testing.T) {
	t.Parallel()
	red := redistest.Start(t)
	var addrs []string
	for _, id := range []string{"node-a", "node-b"} {
		e, opts, err := newBrokeredEngine(red.URL(), id, quietLogger())
		if err != nil {
			t.Fatal(err)
		}
		opts.StatsInterval = 100 * time.Millisecond
		addrs = append(addrs, startEngine(t, e, opts, nil))
	}
	c := dialWS(t, addrs[0])
	c.subscribe(server.StatsChannel)
	dialWS(t, addrs[1])
	m := c.stats(func(m statsMsg) bool { return m.Instance == "node-b" && m.Connections == 1 })
	if m.Broker.Mode != "cluster" || m.Broker.State != "up" || m.Broker.Detail["redis"] != "up" {
		t.Fatalf("node-b's broker %+v: want cluster, up, redis up", m.Broker)
	}
	c.stats(func(m statsMsg) bool {
		return m.Instance == "node-a" && strings.Contains(fmt.Sprint(m.Cluster), "node-a") && strings.Contains(fmt.Sprint(m.Cluster), "node-b")
	})
}
