package redisbroker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
	"github.com/shardhub/shardhub/engine/server"
)

// The fault tests: three instances on one redis-server, a subscriber on each,
// a publisher posting round-robin to the three at ~200 msg/s while a fault
// hits Redis (or an instance). Every message carries its publisher and a
// number, so afterwards each subscriber's take is checked message by message:
// nothing twice, each publisher's messages in order, and what is missing from
// another instance's publications equals exactly what the ledgers say was
// dropped (the publishers' drop counters, the receiver's lost counter).

// faultTimeout is the command timeout of the fault tests' Redis clients:
// shorter than the faults, so commands time out during them and are sent
// again after (the ambiguous case).
const faultTimeout = 700 * time.Millisecond

func faultConfig(redisURL string) Config {
	cfg := fastConfig(redisURL)
	u, _ := url.Parse(redisURL)
	q := u.Query()
	q.Set("read_timeout", faultTimeout.String())
	q.Set("write_timeout", faultTimeout.String())
	q.Set("dial_timeout", faultTimeout.String())
	u.RawQuery = q.Encode()
	cfg.URL = u.String()
	cfg.PeerWait = 2 * time.Second
	return cfg
}

// rigServer are the fault rig's server options: no stats publisher, whose
// publications (once a second, through the broker) would mix with the
// rig's in the ledgers.
var rigServer = server.Options{StatsInterval: -1}

// seqMsg is the data of a fault test message.
type seqMsg struct {
	N int `json:"n"` // number, global across publishers
	P int `json:"p"` // publishing instance
}

// faultRig is the cluster, its subscribers and the record of what was
// published.
type faultRig struct {
	t      *testing.T
	r      *redistest.Server
	prefix string
	nodes  []*node
	subs   []*client
	dead   []atomic.Bool // instances killed by the test: no more publishing to them

	gotMu sync.Mutex // guards got.
	got   [][][]int  // per subscriber, per publisher: the numbers received, in order (collect)

	mu      sync.Mutex
	handed  [][]int // per instance: numbers its broker took (Publish returned nil or a broker drop)
	local   [][]int // per instance: numbers its own subscribers must have (delivered locally)
	refused int     // calls the engine refused before the broker (not expected here)
	next    int
}

func newFaultRig(t *testing.T, tweak func(*Config)) *faultRig {
	t.Helper()
	return newFaultRigOn(t, redistest.Start(t), DefaultPrefix, tweak)
}

// newFaultRigOn builds the rig on an existing Redis, under prefix.
func newFaultRigOn(t *testing.T, r *redistest.Server, prefix string, tweak func(*Config)) *faultRig {
	t.Helper()
	g := &faultRig{t: t, r: r, prefix: prefix, dead: make([]atomic.Bool, 3), handed: make([][]int, 3), local: make([][]int, 3)}
	for range 3 {
		g.got = append(g.got, make([][]int, 3))
	}
	for i := range 3 {
		cfg := faultConfig(r.URL())
		cfg.Prefix = prefix
		if tweak != nil {
			tweak(&cfg)
		}
		// A broadcast queue that holds a flushed backlog whole: this test
		// is about the broker's accounting, and the engine would drop
		// (and count, queue_full) what does not fit its default queue.
		g.nodes = append(g.nodes, newNodeWith(t, fmt.Sprintf("node%d", i), cfg, engine.Config{BroadcastQueue: 8192}, rigServer))
	}
	for _, n := range g.nodes {
		c := dial(t, n)
		c.subscribe("seq")
		g.subs = append(g.subs, c)
	}
	eventually(t, 10*time.Second, "3 instances subscribed and healthy", func() bool {
		return numsub(t, r, prefix+"ch:seq") == 3 && g.healthy()
	})
	return g
}

func (g *faultRig) healthy() bool {
	for i, n := range g.nodes {
		if !g.dead[i].Load() && !n.b.Healthy() {
			return false
		}
	}
	return true
}

// publish posts one message to the next live instance.
func (g *faultRig) publish() {
	g.mu.Lock()
	num := g.next
	g.next++
	g.mu.Unlock()
	i := num % len(g.nodes)
	for g.dead[i].Load() {
		i = (i + 1) % len(g.nodes)
	}
	data, _ := json.Marshal(seqMsg{N: num, P: i})
	err := g.nodes[i].e.Publish("seq", data)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err == nil || errors.Is(err, ErrQueueFull) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrClosed):
		// Local subscribers got it; the broker has it in its ledger.
		g.handed[i] = append(g.handed[i], num)
		g.local[i] = append(g.local[i], num)
	default:
		g.refused++
		g.t.Logf("publish %d on node%d refused by the engine: %v", num, i, err)
	}
}

// during publishes while fault runs, and for lead before and after it.
func (g *faultRig) during(lead time.Duration, fault func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				g.publish()
			}
		}
	}()
	time.Sleep(lead)
	fault()
	eventually(g.t, 30*time.Second, "every live instance healthy again", g.healthy)
	time.Sleep(lead)
	close(stop)
	<-done
}

// collect moves what the subscribers received into g.got. Long runs (the
// soak) call it as they go: a subscriber buffers at most 16,384 messages.
func (g *faultRig) collect() error {
	g.gotMu.Lock()
	defer g.gotMu.Unlock()
	for x, c := range g.subs {
		for drained := false; !drained; {
			select {
			case m := <-c.msgs:
				if m.Type != "message" {
					return fmt.Errorf("client %s: unexpected %+v", c.id, m)
				}
				var v seqMsg
				if err := json.Unmarshal(m.Data, &v); err != nil {
					return err
				}
				g.got[x][v.P] = append(g.got[x][v.P], v.N)
			default:
				drained = true
			}
		}
	}
	return nil
}

// set returns the numbers of s as a set.
func set(s []int) map[int]bool {
	m := make(map[int]bool, len(s))
	for _, n := range s {
		m[n] = true
	}
	return m
}

// ledgerDrops is an instance's broker-leg drops: messages it took and will
// never publish.
func ledgerDrops(l engine.BrokerLedger) uint64 {
	var n uint64
	for _, c := range l.Dropped {
		n += c
	}
	return n
}

// verify waits until every instance is quiescent and the accounting closes,
// then checks it message by message.
func (g *faultRig) verify() {
	t := g.t
	t.Helper()
	got := g.got
	balance := func(x int) (missing, accounted uint64) {
		lx := g.nodes[x].b.Ledger()
		accounted = lx.Lost
		for a := range g.nodes {
			if a == x {
				continue
			}
			missing += uint64(len(g.handed[a]) - len(got[x][a]))
			accounted += ledgerDrops(g.nodes[a].b.Ledger())
		}
		return missing, accounted
	}
	var why string
	ok := func() bool {
		if err := g.collect(); err != nil {
			t.Fatal(err)
		}
		for i, n := range g.nodes {
			l := n.b.Ledger()
			if l.Backlog != 0 {
				why = fmt.Sprintf("node%d backlog %d", i, l.Backlog)
				return false
			}
			if l.Handed != l.Published+ledgerDrops(l) {
				why = fmt.Sprintf("node%d ledger open: %+v", i, l)
				return false
			}
		}
		for x := range g.nodes {
			if g.dead[x].Load() {
				continue
			}
			if missing, accounted := balance(x); missing != accounted {
				why = fmt.Sprintf("node%d misses %d messages of the others, ledgers account for %d", x, missing, accounted)
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			for x := range g.nodes {
				for a := range g.nodes {
					var miss []int
					have := set(got[x][a])
					for _, n := range g.handed[a] {
						if !have[n] {
							miss = append(miss, n)
						}
					}
					if len(miss) > 0 {
						t.Logf("node%d misses %d of node%d's messages: %v", x, len(miss), a, miss[:min(len(miss), 20)])
					}
					var extra []int
					took := set(g.handed[a])
					seen := map[int]bool{}
					for _, n := range got[x][a] {
						if !took[n] || seen[n] {
							extra = append(extra, n)
						}
						seen[n] = true
					}
					if len(extra) > 0 {
						t.Logf("node%d got %d of node%d's messages twice or never taken: %v", x, len(extra), a, extra[:min(len(extra), 20)])
					}
				}
				l := g.nodes[x].b.Ledger()
				t.Logf("node%d ledger %+v duplicates %.0f", x, l, metricValue(t, g.nodes[x].e.Metrics(), "shardhub_redis_duplicates_total"))
			}
			t.Fatalf("accounting did not close within 30s: %s", why)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // nothing more may arrive: no late copies
	if !ok() {
		t.Fatalf("accounting reopened: %s", why)
	}

	for i, n := range g.nodes {
		if d := n.e.Ledger().Messages.Dropped; d[engine.DropQueueFull] != 0 {
			t.Errorf("node%d: the engine dropped messages: %v", i, d)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refused != 0 {
		t.Errorf("%d publications refused by the engine itself", g.refused)
	}
	for x := range g.nodes {
		if g.dead[x].Load() {
			continue
		}
		for a := range g.nodes {
			seq := got[x][a]
			seen := make(map[int]bool, len(seq))
			for i, n := range seq {
				if seen[n] {
					t.Errorf("node%d's subscriber got message %d of node%d twice", x, n, a)
				}
				seen[n] = true
				if i > 0 && n < seq[i-1] {
					t.Errorf("node%d's subscriber got message %d of node%d after %d", x, n, a, seq[i-1])
				}
			}
			want := g.handed[a]
			if a == x {
				want = g.local[x]
			}
			took := set(want)
			for _, n := range seq {
				if !took[n] {
					t.Errorf("node%d's subscriber got message %d of node%d, which node%d never took", x, n, a, a)
				}
			}
			if a == x && len(seq) != len(want) {
				t.Errorf("node%d's subscriber got %d of its own instance's %d messages", x, len(seq), len(want))
			}
		}
		l := g.nodes[x].b.Ledger()
		others := 0
		for a := range g.nodes {
			if a != x {
				others += len(got[x][a])
			}
		}
		if l.Received != uint64(others) {
			t.Errorf("node%d: ledger received %d, its subscriber got %d from the others", x, l.Received, others)
		}
	}
	for i, n := range g.nodes {
		l := n.b.Ledger()
		missing, accounted := uint64(0), uint64(0)
		if !g.dead[i].Load() {
			missing, accounted = balance(i)
		}
		t.Logf("node%d: handed %d published %d dropped %v lost %d received %d; misses %d of the others' (accounted %d); outage %.2fs probe failures %.0f resent %.0f duplicates %.0f",
			i, l.Handed, l.Published, l.Dropped, l.Lost, l.Received, missing, accounted,
			metricValue(t, n.e.Metrics(), "shardhub_redis_outage_seconds_total"),
			metricValue(t, n.e.Metrics(), "shardhub_redis_probe_failures_total"),
			metricValue(t, n.e.Metrics(), "shardhub_redis_resent_total"),
			metricValue(t, n.e.Metrics(), "shardhub_redis_duplicates_total"))
	}
}

func (g *faultRig) metricSum(name string) float64 {
	sum := 0.0
	for _, n := range g.nodes {
		sum += metricValue(g.t, n.e.Metrics(), name)
	}
	return sum
}

func TestFaultRedisKilledAndRestarted(t *testing.T) {
	t.Parallel()
	for _, down := range []time.Duration{200 * time.Millisecond, 2500 * time.Millisecond} {
		t.Run("down "+down.String(), func(t *testing.T) {
			g := newFaultRig(t, nil)
			g.during(500*time.Millisecond, func() {
				g.r.Stop()
				time.Sleep(down)
				g.r.Restart()
			})
			g.verify()
			if v := g.metricSum("shardhub_redis_reconnects_total"); v < 3 {
				t.Errorf("reconnects %v, want every instance's subscriber connections restored", v)
			}
		})
	}
}

func TestFaultRedisFrozen(t *testing.T) {
	t.Parallel()
	const frozen = 2500 * time.Millisecond
	g := newFaultRig(t, nil)
	g.during(500*time.Millisecond, func() {
		g.r.Freeze()
		time.Sleep(frozen)
		g.r.Thaw()
	})
	g.verify()
	// Nothing came through any subscriber connection for longer than the
	// probe interval plus timeout: the probe must have fired, although its
	// own PUBLISH never got an answer.
	if v := g.metricSum("shardhub_redis_probe_failures_total"); v < 1 {
		t.Errorf("probe failures %v during a %v freeze, want ≥ 1", v, frozen)
	}
	for i, n := range g.nodes {
		if v := metricValue(t, n.e.Metrics(), "shardhub_redis_outage_seconds_total"); v < frozen.Seconds()/2 {
			t.Errorf("node%d outage %.2fs for a %v freeze", i, v, frozen)
		}
	}
}

func TestFaultClientPause(t *testing.T) {
	t.Parallel()
	g := newFaultRig(t, nil)
	g.during(500*time.Millisecond, func() {
		// As long as the command timeout: commands sent during it time out
		// on the client and still run when the pause ends.
		g.r.ClientPause(faultTimeout)
		time.Sleep(faultTimeout)
	})
	g.verify()
}

func TestFaultDebugSleep(t *testing.T) {
	t.Parallel()
	g := newFaultRig(t, nil)
	g.during(500*time.Millisecond, func() {
		<-g.r.DebugSleep(2 * faultTimeout)
	})
	g.verify()
}

func TestFaultInstanceKilled(t *testing.T) {
	t.Parallel()
	g := newFaultRig(t, nil)
	g.during(500*time.Millisecond, func() {
		g.dead[2].Store(true)
		g.nodes[2].b.crash() // as if the process were killed: no clean-up
	})
	g.verify()
	var cl struct {
		Instances []Instance `json:"instances"`
	}
	eventually(t, 5*time.Second, "the killed instance gone from /api/cluster", func() bool {
		g.nodes[0].getJSON("/api/cluster", &cl)
		return len(cl.Instances) == 2
	})
}

// Past the backlog's bound, messages are refused (and counted), not queued;
// what was queued is flushed in order after the outage.
func TestFaultBacklogOverflow(t *testing.T) {
	t.Parallel()
	g := newFaultRig(t, func(c *Config) { c.BacklogMessages, c.Writers = 40, 1 })
	g.during(300*time.Millisecond, func() {
		g.r.Stop()
		time.Sleep(time.Second) // ~200 publications for 3 × 40 places
		g.r.Restart()
	})
	g.verify()
	overflow := 0.0
	for _, n := range g.nodes {
		overflow += float64(n.b.Ledger().Dropped[engine.DropBacklogOverflow])
	}
	if overflow == 0 {
		t.Error("no message refused past the backlog bound")
	}
}

// After Redis restarts empty, each instance rewrites its registry and
// heartbeats as soon as Redis answers: cross-instance sends and the cluster
// listing work again without waiting for the next refresh.
func TestRegistryRelearnedAfterRestart(t *testing.T) {
	t.Parallel()
	r, nodes := cluster(t, 3, func(c *Config) {
		// Refreshes far away: only the resync on reconnect can relearn.
		c.ConnTTL, c.ConnRefresh = time.Hour, 20*time.Minute
		c.InstanceTTL, c.HeartbeatInterval = time.Minute, 20*time.Second
	})
	far := dial(t, nodes[2])
	eventually(t, 5*time.Second, "registered", func() bool {
		inst, err := nodes[0].b.Locate(t.Context(), far.id)
		return err == nil && inst == "node2"
	})
	r.Stop()
	eventually(t, 5*time.Second, "outage noticed", func() bool { return !nodes[0].b.Healthy() })
	r.Restart()
	answered := time.Now()
	eventually(t, 10*time.Second, "registry relearned", func() bool {
		inst, err := nodes[0].b.Locate(t.Context(), far.id)
		return err == nil && inst == "node2"
	})
	var cl struct {
		Instances []Instance `json:"instances"`
	}
	eventually(t, 10*time.Second, "3 instances listed", func() bool {
		nodes[1].getJSON("/api/cluster", &cl)
		return len(cl.Instances) == 3
	})
	t.Logf("registry and cluster listing relearned %v after Redis answered again", time.Since(answered).Round(time.Millisecond))
	if err := nodes[0].e.Send(far.id, []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if m := far.next("private"); dataInt(t, m) != 1 {
		t.Fatalf("got %+v", m)
	}
	if v := metricValue(t, nodes[2].e.Metrics(), "shardhub_redis_registry_resyncs_total"); v < 1 {
		t.Errorf("registry resyncs %v, want ≥ 1", v)
	}
}

// A subscriber connection that stops delivering loses what is published
// meanwhile: the receiver must count exactly that (sequence gaps while the
// publisher keeps going, and the tail after it stopped, learnt from the
// announcements that answer its sync request).
func TestLostCountedWhileSubscriberWedged(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tail bool // stop publishing while wedged: only announcements reveal the loss
	}{
		{name: "gap"},
		{name: "tail", tail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := redistest.Start(t)
			proxy := newWedgeProxy(t, r.Addr())
			pub := newNode(t, "pub", fastConfig(r.URL()))
			sub := newNode(t, "sub", fastConfig(proxy.url()))
			c := dial(t, sub)
			c.subscribe("w")
			eventually(t, 5*time.Second, "sub subscribed, both healthy", func() bool {
				return numsub(t, r, "ws:ch:w") == 1 && pub.b.Healthy() && sub.b.Healthy()
			})
			sent := 0
			publish := func(n int) {
				for range n {
					sent++
					if err := pub.e.Publish("w", []byte(`{"n":`+strconv.Itoa(sent)+`}`)); err != nil {
						t.Fatal(err)
					}
					time.Sleep(2 * time.Millisecond)
				}
			}
			publish(50)
			eventually(t, 5*time.Second, "the first 50 delivered", func() bool { return sub.b.Ledger().Received == 50 })
			proxy.wedgeSubscribers()
			publish(100) // into the void
			if !tc.tail {
				eventually(t, 10*time.Second, "wedge detected and connections replaced", func() bool {
					return metricValue(t, sub.e.Metrics(), "shardhub_redis_probe_failures_total") >= 1 && sub.b.Healthy()
				})
				publish(50)
			}
			var got []int
			eventually(t, 15*time.Second, "every message received or counted lost", func() bool {
			drain:
				for {
					select {
					case m := <-c.msgs:
						got = append(got, dataInt(t, m))
					default:
						break drain
					}
				}
				l := sub.b.Ledger()
				return uint64(len(got))+l.Lost == uint64(sent) && l.Received == uint64(len(got))
			})
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("message %d after %d", got[i], got[i-1])
				}
			}
			l := sub.b.Ledger()
			if l.Lost == 0 {
				t.Fatal("nothing lost although the subscriber connections were wedged")
			}
			if v := metricValue(t, sub.e.Metrics(), "shardhub_broker_lost_total"); v != float64(l.Lost) {
				t.Fatalf("ledger: Lost %d, shardhub_broker_lost_total %v", l.Lost, v)
			}
			if _, ok := l.Dropped[engine.DropBrokerLost]; ok {
				t.Fatal("lost messages in the ledger's Dropped: they are outside its balance")
			}
			t.Logf("sent %d, received %d, counted lost %d", sent, len(got), l.Lost)
		})
	}
}

// blockingHandler is a BrokerHandler whose publications wait for release: an
// engine stuck in a slow recovery.
type blockingHandler struct {
	countingHandler
	release chan struct{}
}

func (h *blockingHandler) HandlePublication(string, string, []byte) {
	<-h.release
	h.pubs.Add(1)
}

// The reader never waits for the engine: while the engine is stuck, the
// connection keeps answering its probes, and what the bounded hand-off queue
// cannot hold is dropped and counted lost, exactly.
func TestHandoffOverflowIsCountedAndProbesKeepWorking(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	pub, _ := startBroker(t, r.URL(), "pub")
	cfg := fastConfig(r.URL())
	cfg.HandoffQueue, cfg.PubSubConns = 8, 1
	sub, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &blockingHandler{countingHandler: countingHandler{id: "sub", set: metrics.NewSet()}, release: make(chan struct{})}
	if err := sub.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	var unblock sync.Once
	unstick := func() { unblock.Do(func() { close(h.release) }) }
	t.Cleanup(unstick) // before Close, which waits for the worker
	release, err := sub.Hold(t.Context(), "stuck")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	eventually(t, 5*time.Second, "pub ready", pub.Healthy)
	const n = 200
	for i := range n {
		if err := pub.Publish("stuck", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "every message queued or counted lost", func() bool {
		// The worker holds a batch (at most workerBatch) besides the queue.
		return int(sub.Ledger().Lost)+sub.subs[0].handoff.len() >= n-workerBatch
	})
	// Probes go on (ProbeInterval 200ms, ProbeTimeout 1s) although the engine is stuck.
	time.Sleep(1500 * time.Millisecond)
	if v := metricValue(t, h.set, "shardhub_redis_probe_failures_total"); v != 0 {
		t.Fatalf("%v probe failures while only the engine was stuck", v)
	}
	if !sub.Healthy() {
		t.Fatal("unhealthy while only the engine was stuck")
	}
	unstick()
	eventually(t, 10*time.Second, "the queue drained", func() bool {
		l := sub.Ledger()
		return l.Received+l.Lost == n && h.pubs.Load() == int64(l.Received)
	})
	l := sub.Ledger()
	if v := metricValue(t, h.set, "shardhub_redis_handoff_overflow_total"); l.Lost == 0 || v != float64(l.Lost) {
		t.Fatalf("lost %d, handoff overflow %v: want equal and non-zero", l.Lost, metricValue(t, h.set, "shardhub_redis_handoff_overflow_total"))
	}
	t.Logf("%d published, %d handed to the engine, %d dropped from the full hand-off queue and counted", n, l.Received, l.Lost)
}

// A history channel through a freeze: publications sent twice (the first
// copy ran late) are stored once in the stream and delivered once.
func TestFaultHistoryFrozen(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	var nodes []*node
	var subs []*client
	for i := range 2 {
		cfg := faultConfig(r.URL())
		historyConfig(10000)(&cfg)
		nodes = append(nodes, newNodeWith(t, fmt.Sprintf("node%d", i), cfg, engine.Config{BroadcastQueue: 8192}, rigServer))
		c := dial(t, nodes[i])
		c.subscribe("prices.x")
		subs = append(subs, c)
	}
	eventually(t, 10*time.Second, "subscribed and healthy", func() bool {
		return numsub(t, r, "ws:ch:prices.x") == 2 && nodes[0].b.Healthy() && nodes[1].b.Healthy()
	})
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		defer func() { done <- n }()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := nodes[n%2].e.Publish("prices.x", []byte(`{"n":`+strconv.Itoa(n)+`}`)); err != nil {
				t.Errorf("publish %d: %v", n, err)
			}
			n++
		}
	}()
	time.Sleep(300 * time.Millisecond)
	r.Freeze()
	time.Sleep(2 * faultTimeout)
	r.Thaw()
	eventually(t, 20*time.Second, "healthy again", func() bool { return nodes[0].b.Healthy() && nodes[1].b.Healthy() })
	time.Sleep(300 * time.Millisecond)
	close(stop)
	total := <-done
	// History channels bring this instance's publications back through
	// Redis too: each subscriber must have each one once, or its instance
	// must have counted it lost.
	for i, c := range subs {
		seen := make(map[int]bool)
		eventually(t, 15*time.Second, "every publication received or counted lost", func() bool {
			for {
				select {
				case m := <-c.msgs:
					n := dataInt(t, m)
					if seen[n] {
						t.Fatalf("subscriber %d got %d twice", i, n)
					}
					seen[n] = true
					continue
				default:
				}
				break
			}
			l := nodes[i].b.Ledger()
			return l.Received == uint64(len(seen)) && l.Received+l.Lost == uint64(total)
		})
		if l := nodes[i].b.Ledger(); l.Lost != 0 {
			t.Logf("node%d: %d publications lost (counted) while its subscriptions came back", i, l.Lost)
		}
	}
	if n, err := r.Client().XLen(t.Context(), "ws:hist:prices.x").Result(); err != nil || n != int64(total) {
		t.Fatalf("stream holds %d entries (%v), want %d: each publication once", n, err, total)
	}
	resent := metricValue(t, nodes[0].e.Metrics(), "shardhub_redis_resent_total") + metricValue(t, nodes[1].e.Metrics(), "shardhub_redis_resent_total")
	t.Logf("%d publications, %v sent again after timeouts, each stored and delivered once", total, resent)
}

// A private send that times out during a freeze is reported failed, and
// Redis, when it wakes, does not deliver it after all.
func TestPrivateSendNotDeliveredAfterItsDeadline(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	var nodes []*node
	for i := range 2 {
		cfg := faultConfig(r.URL())
		cfg.SendTimeout = 300 * time.Millisecond
		// No probes: the recipient's subscription must live through the
		// freeze, so that a late PUBLISH would reach it.
		cfg.ProbeInterval = -1
		nodes = append(nodes, newNode(t, fmt.Sprintf("node%d", i), cfg))
	}
	c := dial(t, nodes[1])
	eventually(t, 5*time.Second, "healthy", func() bool { return nodes[0].b.Healthy() && nodes[1].b.Healthy() })
	if err := nodes[0].b.SendTo(t.Context(), "node1", c.id, "", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if n := dataInt(t, c.next("private")); n != 1 {
		t.Fatal(n)
	}
	r.Freeze()
	err := nodes[0].b.SendTo(t.Context(), "node1", c.id, "", []byte(`{"n":2}`))
	time.Sleep(2 * faultTimeout) // past the send's deadline, in Redis' clock too
	r.Thaw()
	if err == nil {
		t.Fatal("send during a freeze reported success")
	}
	eventually(t, 10*time.Second, "healthy again", func() bool { return nodes[0].b.Healthy() && nodes[1].b.Healthy() })
	c.none(500 * time.Millisecond) // the failed send must not arrive late
	if err := nodes[0].b.SendTo(t.Context(), "node1", c.id, "", []byte(`{"n":3}`)); err != nil {
		t.Fatal(err)
	}
	if n := dataInt(t, c.next("private")); n != 3 {
		t.Fatalf("got %d, want 3 (and never 2)", n)
	}
}
