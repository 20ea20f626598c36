//go:build soak

package redisbroker

// The soak (make soak; not part of go test ./...): minutes of churn — WebSocket
// clients connecting, subscribing, publishing, sending to each other and
// leaving, on three instances, with server-side publications and broadcasts —
// while Redis is killed and restarted twice. Beside it, three more instances
// (another prefix on the same Redis) carry a numbered stream that is checked
// message by message, as in the fault tests. At the end every client is gone,
// and the process must be back where it started: goroutines, heap, open files,
// Redis keys; and every broker's ledger must close.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
	"github.com/shardhub/shardhub/engine/server"
)

var (
	soakDuration = flag.Duration("soak.duration", 3*time.Minute, "how long the churn runs")
	soakWorkers  = flag.Int("soak.workers", 12, "concurrent client churners")
)

// Tolerances of the return to baseline. A leak of anything per connection or
// per message would exceed them by orders of magnitude (the soak makes tens
// of thousands of connections); go-redis keeps up to PoolSize idle
// connections per broker, hence the file slack.
const (
	soakGoroutineSlack = 10
	soakHeapSlack      = 16 << 20
	soakFDSlack        = 6 * (DefaultWriters + 8)
	soakHistoryTTL     = 5 * time.Second
)

// soakClient is a lean WebSocket client: it keeps counts, not messages.
type soakClient struct {
	ws     *gws.Conn
	id     chan string
	got    atomic.Int64
	closed chan struct{}
}

func (c *soakClient) OnOpen(*gws.Conn)             {}
func (c *soakClient) OnPing(s *gws.Conn, p []byte) { _ = s.WritePong(p) }
func (c *soakClient) OnPong(*gws.Conn, []byte)     {}
func (c *soakClient) OnClose(*gws.Conn, error)     { close(c.closed) }
func (c *soakClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := m.Bytes()
	if bytes.Contains(b, []byte(`"type":"welcome"`)) {
		var v struct{ Conn string }
		if json.Unmarshal(b, &v) == nil {
			select {
			case c.id <- v.Conn:
			default:
			}
		}
		return
	}
	c.got.Add(1)
}

func soakDial(n *node) (*soakClient, string, error) {
	c := &soakClient{id: make(chan string, 1), closed: make(chan struct{})}
	ws, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws" + strings.TrimPrefix(n.srv.URL, "http") + "/ws"})
	if err != nil {
		return nil, "", err
	}
	c.ws = ws
	go ws.ReadLoop()
	select {
	case id := <-c.id:
		return c, id, nil
	case <-time.After(10 * time.Second):
		ws.NetConn().Close()
		return nil, "", fmt.Errorf("no welcome within 10s")
	}
}

func (c *soakClient) send(v any) {
	b, _ := json.Marshal(v)
	_ = c.ws.WriteMessage(gws.OpcodeText, b)
}

// soakStats counts what the churn did.
type soakStats struct {
	conns, dialErrors, pubs, apiPubs, sends, broadcasts, serverSends atomic.Int64
}

// recentIDs keeps the latest connection ids, for private sends.
type recentIDs struct {
	mu  sync.Mutex
	ids []string
}

func (r *recentIDs) add(id string) {
	r.mu.Lock()
	if len(r.ids) < 256 {
		r.ids = append(r.ids, id)
	} else {
		r.ids[rand.IntN(len(r.ids))] = id
	}
	r.mu.Unlock()
}

func (r *recentIDs) pick() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ids) == 0 {
		return ""
	}
	return r.ids[rand.IntN(len(r.ids))]
}

// churn runs one worker's connect/subscribe/publish/leave loop until stop.
func churn(nodes []*node, st *soakStats, ids *recentIDs, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		n := nodes[rand.IntN(len(nodes))]
		c, id, err := soakDial(n)
		if err != nil {
			st.dialErrors.Add(1)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		st.conns.Add(1)
		ids.add(id)
		chans := []string{"c." + strconv.Itoa(rand.IntN(50)), "h." + strconv.Itoa(rand.IntN(10))}
		for _, ch := range chans {
			c.send(map[string]any{"type": "subscribe", "channel": ch})
		}
		for range 1 + rand.IntN(3) {
			switch rand.IntN(4) {
			case 0:
				c.send(map[string]any{"type": "publish", "channel": chans[rand.IntN(2)], "data": map[string]string{"by": id}})
				st.pubs.Add(1)
			case 1:
				if to := ids.pick(); to != "" {
					c.send(map[string]any{"type": "send", "to": to, "data": 1})
					st.sends.Add(1)
				}
			case 2:
				soakAPIPublish(n, "c."+strconv.Itoa(rand.IntN(50)))
				st.apiPubs.Add(1)
			case 3:
				c.send(map[string]any{"type": "unsubscribe", "channel": chans[0]})
			}
			time.Sleep(time.Duration(20+rand.IntN(200)) * time.Millisecond)
		}
		c.ws.NetConn().Close()
		<-c.closed
	}
}

func soakAPIPublish(n *node, channel string) {
	resp, err := http.Post(n.srv.URL+"/api/publish?channel="+channel, "application/json", strings.NewReader(`{"api":1}`))
	if err == nil {
		resp.Body.Close()
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(es)
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// soakKeys counts Redis keys by kind (the prefix up to the second colon).
func soakKeys(t *testing.T, r *redistest.Server) map[string]int {
	t.Helper()
	keys, err := r.Client().Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, k := range keys {
		parts := strings.SplitN(k, ":", 3)
		kind := parts[0]
		if len(parts) > 1 {
			kind += ":" + parts[1]
		}
		out[kind]++
	}
	return out
}

func TestSoak(t *testing.T) {
	r := redistest.Start(t)
	// Brokers log warnings (outages, reconnects); the engines' per-request
	// warnings during the outages would drown them.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	silent := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	slog.SetDefault(quiet)

	// Production timing for what decides an outage (the probe, the command
	// timeout), unlike the fault tests: on a busy machine their short
	// timeouts declare outages that are not there (they would balance all
	// the same). Short TTLs and refreshes, so keys come and go.
	production := func(c *Config) {
		c.URL = r.URL()
		c.ProbeInterval, c.ProbeTimeout = 0, 0
	}
	// The numbered stream, checked message by message.
	rig := newFaultRigOn(t, r, "seq:", production)
	// The churn cluster.
	var nodes []*node
	for i := range 3 {
		cfg := fastConfig(r.URL())
		production(&cfg)
		cfg.History = []HistoryRule{{Prefix: "h.", Size: 50, TTL: soakHistoryTTL}}
		cfg.Logger = quiet
		nodes = append(nodes, newNodeWith(t, fmt.Sprintf("churn%d", i), cfg, engine.Config{Logger: silent}, server.Options{}))
	}
	eventually(t, 10*time.Second, "churn cluster healthy", func() bool {
		for _, n := range nodes {
			if !n.b.Healthy() {
				return false
			}
		}
		return true
	})
	st := &soakStats{}
	ids := &recentIDs{}
	// The numbered stream's subscribers buffer 16,384 messages: collect as we go.
	collectStop := make(chan struct{})
	collectDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-collectStop:
				collectDone <- nil
				return
			case <-tick.C:
			}
			if err := rig.collect(); err != nil {
				collectDone <- err
				return
			}
		}
	}()

	runChurn := func(d time.Duration, during func()) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range *soakWorkers {
			wg.Add(1)
			go func() { defer wg.Done(); churn(nodes, st, ids, stop) }()
		}
		pubStop := make(chan struct{})
		pubDone := make(chan struct{})
		go func() { // the numbered stream, and server-side traffic on the churn cluster
			defer close(pubDone)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-pubStop:
					return
				case <-tick.C:
				}
				rig.publish()
				n := nodes[i%len(nodes)]
				_ = n.e.Publish("h."+strconv.Itoa(i%10), []byte(`{"s":1}`))
				if i%200 == 0 {
					_ = n.e.Broadcast([]byte(`{"b":1}`))
					st.broadcasts.Add(1)
				}
				if i%7 == 0 {
					if to := ids.pick(); to != "" {
						_ = n.e.Send(to, []byte(`{"p":1}`))
						st.serverSends.Add(1)
					}
				}
			}
		}()
		if during != nil {
			during()
		} else {
			time.Sleep(d)
		}
		close(stop)
		wg.Wait()
		close(pubStop)
		<-pubDone
	}

	// Warm up (pools, maps, shards), then take the baseline with no client left.
	runChurn(15*time.Second, nil)
	quiesce := func() {
		eventually(t, 30*time.Second, "no connection left", func() bool {
			for _, n := range nodes {
				if n.e.Connections() != 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(soakHistoryTTL + time.Second) // history streams expire
	}
	quiesce()
	baseGoroutines, baseHeap, baseFDs, baseKeys := runtime.NumGoroutine(), heapInUse(), openFDs(t), soakKeys(t, r)
	t.Logf("baseline: %d goroutines, heap %.1f MiB, %d open files, Redis keys %v",
		baseGoroutines, float64(baseHeap)/(1<<20), baseFDs, baseKeys)

	start := time.Now()
	runChurn(0, func() {
		third := *soakDuration / 3
		for i, down := range []time.Duration{time.Second, 5 * time.Second} {
			time.Sleep(third - down/2)
			t.Logf("%v: Redis killed (restart %d, down %v)", time.Since(start).Round(time.Second), i+1, down)
			r.Stop()
			time.Sleep(down)
			r.Restart()
		}
		time.Sleep(third)
	})
	t.Logf("churn over after %v: %d connections (%d dial errors), %d client publications, %d API publications, %d client sends, %d server sends, %d broadcasts",
		time.Since(start).Round(time.Second), st.conns.Load(), st.dialErrors.Load(), st.pubs.Load(), st.apiPubs.Load(),
		st.sends.Load(), st.serverSends.Load(), st.broadcasts.Load())

	// The numbered stream: every message delivered or counted.
	close(collectStop)
	if err := <-collectDone; err != nil {
		t.Fatal(err)
	}
	rig.verify()
	// Every broker's ledger closes.
	for _, n := range append(append([]*node{}, nodes...), rig.nodes...) {
		eventually(t, 30*time.Second, n.e.InstanceID()+"'s ledger closed", func() bool {
			l := n.b.Ledger()
			return l.Backlog == 0 && l.Handed == l.Published+ledgerDrops(l)
		})
		l := n.b.Ledger()
		t.Logf("%s ledger: handed %d = published %d + dropped %v; received %d, lost %d; outage %.1fs, reconnects %.0f, resent %.0f, duplicates %.0f",
			n.e.InstanceID(), l.Handed, l.Published, l.Dropped, l.Received, l.Lost,
			metricValue(t, n.e.Metrics(), "shardhub_redis_outage_seconds_total"),
			metricValue(t, n.e.Metrics(), "shardhub_redis_reconnects_total"),
			metricValue(t, n.e.Metrics(), "shardhub_redis_resent_total"),
			metricValue(t, n.e.Metrics(), "shardhub_redis_duplicates_total"))
	}

	// Back to baseline.
	quiesce()
	var g, fds int
	var heap uint64
	var keys map[string]int
	back := func() bool {
		g, heap, fds, keys = runtime.NumGoroutine(), heapInUse(), openFDs(t), soakKeys(t, r)
		return g <= baseGoroutines+soakGoroutineSlack && heap <= baseHeap+soakHeapSlack &&
			fds <= baseFDs+soakFDSlack && fmt.Sprint(keys) == fmt.Sprint(baseKeys)
	}
	for deadline := time.Now().Add(60 * time.Second); !back(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("not back to baseline after 60s: %d goroutines (baseline %d, slack %d), heap %.1f MiB (%.1f, slack %d MiB), %d open files (%d, slack %d), Redis keys %v (%v)",
				g, baseGoroutines, soakGoroutineSlack, float64(heap)/(1<<20), float64(baseHeap)/(1<<20), soakHeapSlack>>20,
				fds, baseFDs, soakFDSlack, keys, baseKeys)
		}
	}
	t.Logf("after: %d goroutines (baseline %d), heap %.1f MiB (%.1f), %d open files (%d), Redis keys %v (%v)",
		g, baseGoroutines, float64(heap)/(1<<20), float64(baseHeap)/(1<<20), fds, baseFDs, keys, baseKeys)
}
