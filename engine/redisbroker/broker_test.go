package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
)

// cluster starts a Redis and n engines on it.
func cluster(t *testing.T, n int, tweak func(*Config)) (*redistest.Server, []*node) {
	t.Helper()
	r := redistest.Start(t)
	nodes := make([]*node, n)
	for i := range nodes {
		cfg := fastConfig(r.URL())
		if tweak != nil {
			tweak(&cfg)
		}
		nodes[i] = newNode(t, fmt.Sprintf("node%d", i), cfg)
	}
	return r, nodes
}

func dataInt(t *testing.T, m msg) int {
	t.Helper()
	var v struct{ N int }
	if err := jsonUnmarshal(m.Data, &v); err != nil {
		t.Fatalf("data %s: %v", m.Data, err)
	}
	return v.N
}

func TestPublishReachesEveryInstanceExactlyOnce(t *testing.T) {
	r, nodes := cluster(t, 3, nil)
	var clients []*client
	for _, n := range nodes {
		for range 2 {
			c := dial(t, n)
			c.subscribe("news")
			clients = append(clients, c)
		}
	}
	eventually(t, 5*time.Second, "3 instances subscribed to ws:ch:news", func() bool {
		return numsub(t, r, "ws:ch:news") == 3
	})
	// Each instance publishes through the engine, and one client publishes too.
	for i, n := range nodes {
		if err := n.e.Publish("news", []byte(`{"n":`+strconv.Itoa(i)+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	clients[0].send(map[string]any{"type": "publish", "channel": "news", "data": map[string]int{"n": 3}})
	for _, c := range clients {
		got := map[int]int{}
		for range 4 {
			got[dataInt(t, c.next("message"))]++
		}
		for i := range 4 {
			if got[i] != 1 {
				t.Errorf("client %s got message %d %d times, want once (all: %v)", c.id, i, got[i], got)
			}
		}
	}
	for _, c := range clients {
		c.none(200 * time.Millisecond) // no duplicate arrives late
	}
}

func TestBroadcastReachesEveryInstanceOnce(t *testing.T) {
	_, nodes := cluster(t, 3, nil)
	var clients []*client
	for _, n := range nodes {
		clients = append(clients, dial(t, n))
	}
	eventually(t, 5*time.Second, "subscriber connections live", func() bool {
		for _, n := range nodes {
			if !n.b.Healthy() {
				return false
			}
		}
		return true
	})
	if err := nodes[1].e.Broadcast([]byte(`{"n":7}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if n := dataInt(t, c.next("message")); n != 7 {
			t.Fatalf("got %d", n)
		}
		c.none(200 * time.Millisecond)
	}
}

func TestPrivateSendAcrossInstances(t *testing.T) {
	_, nodes := cluster(t, 3, nil)
	a, b := dial(t, nodes[0]), dial(t, nodes[2])
	eventually(t, 5*time.Second, "b registered in Redis", func() bool {
		inst, err := nodes[0].b.Locate(context.Background(), b.id)
		return err == nil && inst == "node2"
	})
	a.send(map[string]any{"type": "send", "to": b.id, "data": map[string]int{"n": 1}, "id": 9})
	if m := a.next("ack"); m.Type != "ack" {
		t.Fatal(m)
	}
	m := b.next("private")
	if m.From != a.id || dataInt(t, m) != 1 {
		t.Fatalf("got %+v, want a private message from %s", m, a.id)
	}
	// The server side API routes too.
	if err := nodes[1].e.Send(b.id, []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	if m := b.next("private"); m.From != "" || dataInt(t, m) != 2 {
		t.Fatalf("got %+v", m)
	}
	if err := nodes[1].e.Send("node2-nosuch", []byte(`1`)); !errors.Is(err, engine.ErrConnNotFound) {
		t.Fatalf("send to unknown conn: %v, want ErrConnNotFound", err)
	}
}

func TestLazySubscriptionsVisibleInRedis(t *testing.T) {
	r, nodes := cluster(t, 1, nil)
	n := nodes[0]
	if chans := pubsubChannels(t, r, "ws:ch:*"); len(chans) != 0 {
		t.Fatalf("channels before any subscriber: %v", chans)
	}
	a, b := dial(t, n), dial(t, n)
	a.subscribe("lazy.one")
	b.subscribe("lazy.one")
	b.subscribe("lazy.two")
	eventually(t, 5*time.Second, "both channels subscribed", func() bool {
		return len(pubsubChannels(t, r, "ws:ch:*")) == 2
	})
	if got := numsub(t, r, "ws:ch:lazy.one"); got != 1 {
		t.Fatalf("lazy.one has %d Redis subscribers for 2 local ones, want 1", got)
	}
	// The broadcast and instance channels plus the two, over 2 connections: not one connection per channel.
	clients, _ := r.Client().ClientList(context.Background()).Result()
	if pubsubConns := strings.Count(clients, "cmd=subscribe"); pubsubConns > 2 {
		t.Errorf("%d connections in subscribe mode, want at most PubSubConns=2", pubsubConns)
	}
	a.send(map[string]any{"type": "unsubscribe", "channel": "lazy.one"})
	a.next("unsubscribed")
	time.Sleep(100 * time.Millisecond)
	if got := numsub(t, r, "ws:ch:lazy.one"); got != 1 {
		t.Fatalf("lazy.one unsubscribed in Redis while b still subscribes")
	}
	b.send(map[string]any{"type": "unsubscribe", "channel": "lazy.one"})
	b.next("unsubscribed")
	eventually(t, 5*time.Second, "lazy.one unsubscribed after its last local subscriber left", func() bool {
		return slices.Equal(pubsubChannels(t, r, "ws:ch:*"), []string{"ws:ch:lazy.two"})
	})
	b.ws.NetConn().Close() // leaving closes the last subscription too
	eventually(t, 5*time.Second, "no channel left", func() bool {
		return len(pubsubChannels(t, r, "ws:ch:*")) == 0
	})
}

func TestDeadInstanceExpires(t *testing.T) {
	r, nodes := cluster(t, 3, nil)
	victim := dial(t, nodes[2])
	eventually(t, 5*time.Second, "victim registered", func() bool {
		_, err := nodes[0].b.Locate(context.Background(), victim.id)
		return err == nil
	})
	var cl struct {
		Instances []Instance `json:"instances"`
	}
	eventually(t, 5*time.Second, "3 instances listed, node2 with its connection", func() bool {
		nodes[0].getJSON("/api/cluster", &cl)
		ok := len(cl.Instances) == 3
		for _, in := range cl.Instances {
			ok = ok && (in.ID != "node2" || in.Connections == 1)
		}
		return ok
	})
	nodes[2].b.crash() // no clean-up: as if the process were killed
	// Others stop routing to it once its heartbeat expires (InstanceTTL 1s)...
	eventually(t, 3*time.Second, "node2 gone from /api/cluster", func() bool {
		nodes[0].getJSON("/api/cluster", &cl)
		return len(cl.Instances) == 2
	})
	if err := nodes[0].e.Send(victim.id, []byte(`1`)); !errors.Is(err, engine.ErrConnNotFound) {
		t.Fatalf("send to a dead instance's connection: %v, want ErrConnNotFound", err)
	}
	// ...and its keys expire (ConnTTL 1.5s).
	eventually(t, 3*time.Second, "node2's keys expired", func() bool {
		return !exists(t, r, "ws:conn:"+victim.id) && !exists(t, r, "ws:instance:node2")
	})
}

func TestCleanShutdownRemovesKeys(t *testing.T) {
	r, nodes := cluster(t, 1, func(c *Config) { c.ConnTTL, c.ConnRefresh = time.Hour, time.Minute })
	c := dial(t, nodes[0])
	eventually(t, 5*time.Second, "conn registered", func() bool { return exists(t, r, "ws:conn:"+c.id) })
	nodes[0].stop()
	for _, key := range []string{"ws:conn:" + c.id, "ws:instance:node0"} {
		if exists(t, r, key) {
			t.Errorf("%s still exists after a clean shutdown", key)
		}
	}
}

func metricValue(t *testing.T, set *metrics.Set, name string) float64 {
	t.Helper()
	var sb strings.Builder
	set.WritePrometheus(&sb)
	for _, line := range strings.Split(sb.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// TestRedisOutage runs without a backlog (BacklogMessages < 0): publishing
// fails fast while Redis is down. TestOutageBacklog covers the default.
func TestRedisOutage(t *testing.T) {
	r, nodes := cluster(t, 2, func(c *Config) { c.BacklogMessages = -1 })
	a0, a1 := dial(t, nodes[0]), dial(t, nodes[1])
	a0.subscribe("live")
	a1.subscribe("live")
	eventually(t, 5*time.Second, "both instances subscribed", func() bool { return numsub(t, r, "ws:ch:live") == 2 })
	for _, n := range nodes {
		eventually(t, 5*time.Second, "healthy", n.b.Healthy)
	}

	r.Stop()
	eventually(t, 5*time.Second, "outage noticed", func() bool { return !nodes[0].b.Healthy() && !nodes[1].b.Healthy() })
	var health map[string]any
	if code := nodes[0].getJSON("/healthz", &health); code != 503 || health["status"] != "degraded" {
		t.Fatalf("/healthz during the outage: %d %v", code, health)
	}
	// Local delivery keeps working; the publisher is told the other instances missed it.
	err := nodes[0].e.Publish("live", []byte(`{"n":1}`))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("publish during the outage: %v, want ErrUnavailable", err)
	}
	if n := dataInt(t, a0.next("message")); n != 1 {
		t.Fatal(n)
	}
	a1.none(200 * time.Millisecond)
	if v := metricValue(t, nodes[0].e.Metrics(), `shardhub_broker_dropped_total{reason="broker_unavailable"}`); v < 1 {
		t.Errorf("unpublished messages counted %v, want ≥ 1", v)
	}

	time.Sleep(300 * time.Millisecond)
	r.Restart() // same port, empty
	for _, n := range nodes {
		eventually(t, 10*time.Second, "healthy again", n.b.Healthy)
	}
	eventually(t, 5*time.Second, "subscriptions restored", func() bool { return numsub(t, r, "ws:ch:live") == 2 })
	if err := nodes[0].e.Publish("live", []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	if n := dataInt(t, a1.next("message")); n != 2 {
		t.Fatalf("cross-instance after the outage: got %d", n)
	}
	if n := dataInt(t, a0.next("message")); n != 2 {
		t.Fatal(n)
	}
	for _, n := range nodes {
		set := n.e.Metrics()
		if v := metricValue(t, set, "shardhub_redis_outage_seconds_total"); v < 0.2 {
			t.Errorf("%s outage seconds %v, want ≥ 0.2", n.e.InstanceID(), v)
		}
		if v := metricValue(t, set, "shardhub_redis_reconnects_total"); v < 1 {
			t.Errorf("%s reconnects %v, want ≥ 1", n.e.InstanceID(), v)
		}
		if v := metricValue(t, set, "shardhub_redis_up"); v != 1 {
			t.Errorf("%s shardhub_redis_up %v", n.e.InstanceID(), v)
		}
	}
	if code := nodes[0].getJSON("/healthz", &health); code != 200 {
		t.Fatalf("/healthz after the outage: %d %v", code, health)
	}
	// The registry is rewritten: the new Redis knows where a1 is.
	eventually(t, 5*time.Second, "registry restored", func() bool {
		inst, err := nodes[0].b.Locate(context.Background(), a1.id)
		return err == nil && inst == "node1"
	})
}

func historyConfig(size int) func(*Config) {
	return func(c *Config) {
		c.History = []HistoryRule{{Prefix: "prices.", Size: size, TTL: time.Minute}}
	}
}

func TestRecoveryDeliversExactlyTheMissedMessages(t *testing.T) {
	_, nodes := cluster(t, 2, historyConfig(1000))
	first := dial(t, nodes[1])
	first.subscribe("prices.eur")
	// History channels get their offsets from Redis, also on the publishing instance.
	local := dial(t, nodes[0])
	local.subscribe("prices.eur")
	for i := 1; i <= 5; i++ {
		if err := nodes[0].e.Publish("prices.eur", []byte(`{"n":`+strconv.Itoa(i)+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	var offsets []string
	for i := 1; i <= 5; i++ {
		m := first.next("message")
		if dataInt(t, m) != i || m.Offset == "" {
			t.Fatalf("message %d: %+v", i, m)
		}
		if l := local.next("message"); dataInt(t, l) != i || l.Offset != m.Offset {
			t.Fatalf("local subscriber got %+v, want n=%d offset %s", l, i, m.Offset)
		}
		offsets = append(offsets, m.Offset)
	}
	local.none(100 * time.Millisecond) // delivered once, not twice

	// The client leaves after message 3 and misses 4..20, while publishing goes on.
	stop := make(chan struct{})
	done := make(chan int)
	for i := 6; i <= 20; i++ {
		_ = nodes[0].e.Publish("prices.eur", []byte(`{"n":`+strconv.Itoa(i)+`}`))
	}
	go func() {
		i := 21
		defer func() { done <- i - 1 }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if nodes[0].e.Publish("prices.eur", []byte(`{"n":`+strconv.Itoa(i)+`}`)) == nil {
				i++
			}
			time.Sleep(time.Millisecond)
		}
	}()
	back := dial(t, nodes[1])
	back.send(map[string]any{"type": "subscribe", "channel": "prices.eur", "since": offsets[2], "id": 1})
	rep := back.next("subscribed")
	if rep.Recovered == nil || !*rep.Recovered {
		t.Fatalf("subscribed reply %+v, want recovered: true", rep)
	}
	time.Sleep(200 * time.Millisecond) // live publications keep coming across the seam
	close(stop)
	last := <-done
	prev := ""
	var seq []string
	for want := 4; want <= last; want++ {
		m := back.next("message")
		seq = append(seq, fmt.Sprintf("%d@%s", dataInt(t, m), m.Offset))
		if got := dataInt(t, m); got != want {
			t.Fatalf("after recovery got n=%d, want %d (no gap, no duplicate, in order); got %v", got, want, seq)
		}
		if prev != "" && engine.CompareOffsets(m.Offset, prev) <= 0 {
			t.Fatalf("offset %s after %s", m.Offset, prev)
		}
		prev = m.Offset
	}
	back.none(200 * time.Millisecond)
	// The instance itself received each publication once.
	for want := 6; want <= last; want++ {
		if got := dataInt(t, first.next("message")); got != want {
			t.Fatalf("first client got n=%d, want %d", got, want)
		}
	}
	first.none(100 * time.Millisecond)
	t.Logf("recovered 4..20 and got live messages up to %d across the seam", last)
}

func TestRecoveryImpossible(t *testing.T) {
	r, nodes := cluster(t, 1, historyConfig(5))
	n := nodes[0]
	c := dial(t, n)
	c.subscribe("prices.usd")
	var offsets []string
	for i := 1; i <= 20; i++ {
		if err := n.e.Publish("prices.usd", []byte(`{"n":`+strconv.Itoa(i)+`}`)); err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, c.next("message").Offset)
	}
	cases := []struct {
		name, channel, since string
		want                 bool
		first                int // first message recovered when want
	}{
		{name: "within the retained history", channel: "prices.usd", since: offsets[15], want: true, first: 17},
		{name: "last retained entry's predecessor trimmed", channel: "prices.usd", since: offsets[14], want: true, first: 16},
		{name: "older than the retained history", channel: "prices.usd", since: offsets[2]},
		{name: "not an offset", channel: "prices.usd", since: "yesterday"},
		{name: "from the future", channel: "prices.usd", since: "99999999999999-0"},
		{name: "channel without history", channel: "other", since: offsets[18]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := dial(t, n)
			k.send(map[string]any{"type": "subscribe", "channel": tc.channel, "since": tc.since})
			rep := k.next("subscribed")
			if rep.Recovered == nil || *rep.Recovered != tc.want {
				t.Fatalf("reply %+v, want recovered=%v", rep, tc.want)
			}
			if tc.want {
				for i := tc.first; i <= 20; i++ {
					if got := dataInt(t, k.next("message")); got != i {
						t.Fatalf("got %d, want %d", got, i)
					}
				}
			}
			k.none(100 * time.Millisecond)
		})
	}
	t.Run("after a Redis restart", func(t *testing.T) {
		r.Restart()
		eventually(t, 10*time.Second, "healthy again", n.b.Healthy)
		if err := n.e.Publish("prices.usd", []byte(`{"n":21}`)); err != nil {
			t.Fatal(err)
		}
		// It comes back through Redis: wait for it, so it cannot race the
		// next subscription's reply.
		if got := dataInt(t, c.next("message")); got != 21 {
			t.Fatalf("got %d, want 21", got)
		}
		k := dial(t, n)
		k.send(map[string]any{"type": "subscribe", "channel": "prices.usd", "since": offsets[19]})
		if rep := k.next("subscribed"); rep.Recovered == nil || *rep.Recovered {
			t.Fatalf("reply %+v, want recovered=false: the history did not survive", rep)
		}
	})
}
