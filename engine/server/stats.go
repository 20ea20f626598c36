package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardhub/shardhub/engine"
)

// StatsChannel is the system channel on which Handler publishes a StatsMessage
// every second (Options.StatsInterval) while someone listens: the dashboard at
// GET / subscribes to it. Clients may subscribe; channels starting with "$" are
// published by the server only.
const StatsChannel = "$sys.stats"

// DefaultStatsInterval is the stats publisher's period when
// Options.StatsInterval is zero.
const DefaultStatsInterval = time.Second

// clusterRefresh is how often the publisher asks Options.Cluster for the
// instance list (a Redis round trip); the stats themselves go out every tick.
const clusterRefresh = 5 * time.Second

// StatsMessage is one publication on StatsChannel: the engine's Stats, with the
// per-shard detail reduced to connection counts, plus rates, memory, broker
// state and the cluster's instances. With a broker linking instances every
// instance publishes its own, and every subscriber gets them all (tell them
// apart by Instance).
type StatsMessage struct {
	engine.Stats
	// Shards is the connection count of each shard. It replaces
	// engine.Stats.Shards, whose full per-shard detail is too big to publish
	// every second on an engine with thousands of shards.
	Shards []int `json:"shards"`
	// Time is when the snapshot was taken, in Unix milliseconds.
	Time int64 `json:"time"`
	// Rates are per-second rates over the last interval.
	Rates Rates `json:"rates"`
	// Memory is the process memory.
	Memory Memory `json:"memory"`
	// Broker says whether this instance is a single node or part of a
	// cluster, and the broker's health.
	Broker BrokerState `json:"broker"`
	// Cluster lists the cluster's live instances from Options.Cluster
	// (refreshed every few seconds); absent on a single node.
	Cluster []ClusterInstance `json:"cluster,omitempty"`
}

// ClusterInstance is one instance in StatsMessage.Cluster: its id and
// connection count only. The registry knows host names and process ids too,
// but the stats channel reaches every client allowed to subscribe to it.
type ClusterInstance struct {
	ID          string `json:"id"`
	Connections int64  `json:"connections"`
}

// Rates are the per-second rates of a StatsMessage, computed from the engine's
// counters over the interval since the previous message. They include the
// stats publications themselves (one per instance per interval).
type Rates struct {
	// Interval is the length of the interval in seconds (0 in the first message).
	Interval float64 `json:"interval_s"`
	// MessagesIn counts the messages received from clients.
	MessagesIn float64 `json:"messages_in"`
	// MessagesOut counts the broadcasts, publications and private messages
	// accepted for delivery.
	MessagesOut float64 `json:"messages_out"`
	// Deliveries counts the frames written to connections (one message to a
	// thousand subscribers is a thousand deliveries).
	Deliveries float64 `json:"deliveries"`
	// BytesSent counts the bytes written to connections.
	BytesSent float64 `json:"bytes_sent"`
	// Connects counts new connections.
	Connects float64 `json:"connects"`
	// Dropped counts the messages dropped because the broadcast queue was full.
	Dropped float64 `json:"dropped"`
	// Forced counts the slow consumers evicted.
	Forced float64 `json:"forced_disconnects"`
}

// BrokerState is the broker part of a StatsMessage.
type BrokerState struct {
	// Mode is "single" (no broker links this instance to others) or "cluster".
	Mode string `json:"mode"`
	// State is "up", or "degraded" while Options.Health says so.
	State string `json:"state"`
	// Detail is what Options.Health reports (e.g. "redis": "down").
	Detail map[string]any `json:"detail,omitempty"`
}

// publishers holds the engines that have a stats publisher, so that calling
// Handler twice for one engine does not publish everything twice.
var publishers sync.Map // *engine.Engine → *statsPublisher

// statsPublisher publishes a StatsMessage on StatsChannel every interval.
type statsPublisher struct {
	e        *engine.Engine
	opts     Options
	interval time.Duration
	done     chan struct{} // closed when run returns
	ticks    atomic.Int64  // intervals elapsed, published or not (tests watch it)

	// The fields below are owned by the run goroutine.
	prev        engine.Stats
	prevAt      time.Time
	cluster     []ClusterInstance
	clusterAt   time.Time
	lastErrLogs time.Time
}

// startStatsPublisher starts e's stats publisher unless it runs already or
// opts disables it.
func startStatsPublisher(e *engine.Engine, opts Options) {
	interval := opts.StatsInterval
	if interval < 0 {
		return
	}
	if interval == 0 {
		interval = DefaultStatsInterval
	}
	p := &statsPublisher{e: e, opts: opts, interval: interval, done: make(chan struct{})}
	if _, running := publishers.LoadOrStore(e, p); running {
		return
	}
	go p.run()
}

// run publishes every interval until the engine has shut down. Runs in its own
// goroutine.
func (p *statsPublisher) run() {
	defer close(p.done)
	defer publishers.Delete(p.e)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.e.Done():
			return
		case now := <-t.C:
			p.ticks.Add(1)
			if !p.listened() {
				p.prevAt = time.Time{} // rates restart with the next listener
				continue
			}
			if err := p.publish(now); errors.Is(err, engine.ErrShutdown) {
				return
			}
		}
	}
}

// listened reports whether a stats message can reach anyone: a subscriber on
// this instance, or, in a cluster, possibly on another instance (which this
// one cannot see, so it always publishes: one small message per interval).
func (p *statsPublisher) listened() bool {
	if p.opts.Cluster != nil || p.opts.Health != nil {
		return true
	}
	for _, ch := range p.e.Channels() {
		if ch == StatsChannel {
			return true
		}
	}
	return false
}

// publish takes a snapshot and publishes it.
func (p *statsPublisher) publish(now time.Time) error {
	m := p.snapshot(now)
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	err = p.e.Publish(StatsChannel, b)
	switch {
	case err == nil, errors.Is(err, engine.ErrQueueFull):
		// A full queue drops this one like any message, counted by the engine.
		return nil
	case errors.Is(err, engine.ErrShutdown):
		return err
	}
	if now.Sub(p.lastErrLogs) >= time.Minute {
		p.lastErrLogs = now
		p.opts.Logger.Warn("shardhub: publishing stats", "channel", StatsChannel, "err", err)
	}
	return err
}

// snapshot builds the StatsMessage for now and remembers the counters for the
// next rates.
func (p *statsPublisher) snapshot(now time.Time) StatsMessage {
	st := p.e.Stats()
	m := StatsMessage{
		Stats:  st,
		Shards: make([]int, len(st.Shards)),
		Time:   now.UnixMilli(),
		Memory: ReadMemory(),
		Broker: BrokerState{Mode: "single", State: "up"},
	}
	m.Stats.Shards = nil
	for i, s := range st.Shards {
		m.Shards[i] = s.Connections
	}
	if !p.prevAt.IsZero() {
		m.Rates = rates(p.prev, st, now.Sub(p.prevAt).Seconds())
	}
	p.prev, p.prevAt = st, now
	if p.opts.Health != nil || p.opts.Cluster != nil {
		m.Broker.Mode = "cluster"
	}
	if p.opts.Health != nil {
		degraded, detail := p.opts.Health()
		if degraded {
			m.Broker.State = "degraded"
		}
		m.Broker.Detail = detail
	}
	if p.opts.Cluster != nil {
		if now.Sub(p.clusterAt) >= clusterRefresh {
			p.clusterAt = now
			ctx, cancel := context.WithTimeout(context.Background(), p.interval)
			v, err := p.opts.Cluster(ctx)
			cancel()
			p.cluster = nil // unknown rather than stale
			if err == nil {
				p.cluster, err = clusterInstances(v)
			}
			if err != nil {
				p.opts.Logger.Debug("shardhub: listing cluster instances for stats", "err", err)
			}
		}
		m.Cluster = p.cluster
	}
	return m
}

// clusterInstances reads the instance list out of what Options.Cluster
// returns: a JSON object with an "instances" array of objects with "id" and
// "connections" (as redisbroker.Broker.Cluster and the single-node
// /api/cluster answer), keeping those two fields only.
func clusterInstances(v any) ([]ClusterInstance, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var c struct {
		Instances []ClusterInstance `json:"instances"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return c.Instances, nil
}

// rates computes the per-second rates between two snapshots secs apart.
func rates(prev, cur engine.Stats, secs float64) Rates {
	if secs <= 0 {
		return Rates{}
	}
	per := func(a, b int64) float64 {
		if b < a { // a counter never goes back; guard the division anyway
			return 0
		}
		return float64(b-a) / secs
	}
	out := func(s engine.Stats) int64 { return s.Broadcasts + s.Publications + s.Privates }
	return Rates{
		Interval:    secs,
		MessagesIn:  per(prev.MessagesIn, cur.MessagesIn),
		MessagesOut: per(out(prev), out(cur)),
		Deliveries:  per(prev.Deliveries, cur.Deliveries),
		BytesSent:   per(prev.BytesSent, cur.BytesSent),
		Connects:    per(prev.ConnectedTotal, cur.ConnectedTotal),
		Dropped:     per(prev.Dropped, cur.Dropped),
		Forced:      per(prev.Forced, cur.Forced),
	}
}
