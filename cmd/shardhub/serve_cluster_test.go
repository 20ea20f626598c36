package main

import (
	"io"
	"log/slog"
	"testing"
	"time"
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
		historyPrefixes: "prices., chat.", historySize: 10, historyTTL: time.Minute}
	b, err := c.broker(log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.HasHistory("prices.eur") || !b.HasHistory("chat.1") || b.HasHistory("news") {
		t.Fatal("history prefixes not applied (trimmed, comma-separated)")
	}
}
