package main

import (
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine/redisbroker"
)

func TestReusePortLetsInstancesShareAPort(t *testing.T) {
	c := clusterFlags{reusePort: true}
	a, err := c.listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := c.listen(a.Addr().String())
	if err != nil {
		t.Fatalf("second listener on %s with --reuseport: %v", a.Addr(), err)
	}
	b.Close()

	plain := clusterFlags{}
	if l, err := plain.listen(a.Addr().String()); err == nil {
		l.Close()
		t.Fatalf("a listener without --reuseport shared %s", a.Addr())
	}
}

func TestClusterFlagsBroker(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if b, err := (&clusterFlags{}).broker(log); b != nil || err != nil {
		t.Fatalf("no --redis: got %v, %v; want a single node", b, err)
	}
	if _, err := (&clusterFlags{historyPrefixes: "prices."}).broker(log); err == nil {
		t.Fatal("--history-prefix without --redis accepted")
	}
	c := &clusterFlags{redisURL: "redis://127.0.0.1:1/0", prefix: "ws:", pubsubConns: 2,
		historyPrefixes: "prices., chat.", historySize: 10, historyTTL: time.Minute,
		backlogMessages: 100, backlogBytes: 1 << 20, peerWait: time.Second}
	b, err := c.broker(log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.HasHistory("prices.eur") || !b.HasHistory("chat.1") || b.HasHistory("news") {
		t.Fatal("history prefixes not applied (trimmed, comma-separated)")
	}
	bad := *c
	bad.backlogBytes = -1
	if _, err := bad.broker(log); err == nil || !strings.Contains(err.Error(), "BacklogBytes") {
		t.Fatalf("--redis-backlog-bytes -1: %v, want an error naming BacklogBytes", err)
	}
}

func TestClusterFlagsDefineBrokerDefaults(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var c clusterFlags
	c.define(fs)
	if err := fs.Parse([]string{"--redis-backlog-messages", "-1", "--redis-peer-wait", "500ms"}); err != nil {
		t.Fatal(err)
	}
	if c.backlogMessages != -1 || c.peerWait != 500*time.Millisecond || c.backlogBytes != redisbroker.DefaultBacklogBytes {
		t.Fatalf("parsed %+v", c)
	}
}
