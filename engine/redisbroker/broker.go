package redisbroker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/go-redis/v9"

	"github.com/shardhub/shardhub/engine"
)

// Broker links engines through Redis. Create it with New, hand it to
// engine.Config.Broker; the engine starts it and closes it on Shutdown.
type Broker struct {
	cfg    Config
	client *redis.Client
	log    *slog.Logger

	// Set by Start, read-only after.
	h       engine.BrokerHandler
	id      string
	started atomic.Bool
	subs    []*subConn
	writers []*writer
	reg     *registry
	m       *brokerMetrics
	names   names

	// up is false from a failed command until the monitor's next successful
	// PING: Publish fails fast meanwhile instead of queueing for a dead Redis.
	up         atomic.Bool
	downSince  atomic.Int64 // unix nanoseconds the current outage began; 0 when healthy
	lastHealth atomic.Bool  // health at the last monitor tick, for transition logs

	markerSeq atomic.Uint64 // History's sync markers
	markers   sync.Map      // marker token → chan struct{} closed when it comes back

	quit      chan struct{}  // closed by Close: every goroutine stops
	wg        sync.WaitGroup // the goroutines started by Start
	closeOnce sync.Once      // makes Close idempotent
	abandon   bool           // set before quit by tests simulating a crash: skip the clean-up
}

var (
	_ engine.Broker        = (*Broker)(nil)
	_ engine.Router        = (*Broker)(nil)
	_ engine.HistoryBroker = (*Broker)(nil)
)

// names are the Redis key and channel names of one instance.
type names struct {
	prefix, ch, hist, conn, instance, instances, broadcast, inst string
}

func newNames(prefix, id string) names {
	return names{
		prefix:    prefix,
		ch:        prefix + "ch:",
		hist:      prefix + "hist:",
		conn:      prefix + "conn:",
		instance:  prefix + "instance:",
		instances: prefix + "instances",
		broadcast: prefix + "broadcast",
		inst:      prefix + "inst:" + id,
	}
}

// New validates cfg and returns a broker. It does not connect: Start (called by
// engine.New) does.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	opt, err := cfg.redisOptions()
	if err != nil {
		return nil, fmt.Errorf("%w: URL: %v", ErrInvalidConfig, err)
	}
	b := &Broker{
		cfg:    cfg,
		client: redis.NewClient(opt),
		log:    cfg.Logger,
		quit:   make(chan struct{}),
	}
	return b, nil
}

// Client returns the go-redis client the broker uses (for tests and tools).
func (b *Broker) Client() *redis.Client { return b.client }

// Start connects to Redis and begins handing other instances' messages to h.
// A Redis that cannot be reached is not an error: the broker starts degraded
// (local delivery works), logs it, and keeps reconnecting.
func (b *Broker) Start(h engine.BrokerHandler) error {
	if !b.started.CompareAndSwap(false, true) {
		return fmt.Errorf("redisbroker: Start called twice")
	}
	b.h = h
	b.id = h.InstanceID()
	b.names = newNames(b.cfg.Prefix, b.id)
	b.log = b.log.With("instance", b.id)
	b.m = newBrokerMetrics(b, h.Metrics())

	ctx, cancel := context.WithTimeout(context.Background(), b.client.Options().DialTimeout)
	err := b.client.Ping(ctx).Err()
	cancel()
	if err != nil {
		b.log.Error("redisbroker: redis unreachable at start; local delivery works, cross-instance delivery waits for it",
			"addr", b.client.Options().Addr, "err", err)
		b.markDown(err)
	} else {
		b.up.Store(true)
		b.log.Info("redisbroker: connected", "addr", b.client.Options().Addr, "pubsub_conns", b.cfg.PubSubConns,
			"writers", b.cfg.Writers, "history_rules", len(b.cfg.History))
	}
	b.lastHealth.Store(true)

	b.subs = make([]*subConn, b.cfg.PubSubConns)
	for i := range b.subs {
		b.subs[i] = newSubConn(b, i)
	}
	// The broadcast and instance channels are permanent subscriptions.
	b.subFor(b.names.broadcast).add(b.names.broadcast, true)
	b.subFor(b.names.inst).add(b.names.inst, true)
	b.writers = make([]*writer, b.cfg.Writers)
	for i := range b.writers {
		b.writers[i] = &writer{b: b, q: make(chan pubItem, b.cfg.PublishQueue)}
	}
	b.reg = newRegistry(b)

	for _, s := range b.subs {
		b.wg.Add(1)
		go s.run()
	}
	for _, w := range b.writers {
		b.wg.Add(1)
		go w.run()
	}
	b.wg.Add(2)
	go b.reg.run()
	go b.monitor()
	return nil
}

// Close stops the broker: what is queued is flushed (briefly), this instance's
// registry entries are deleted, the connections closed. Idempotent. The engine
// calls it last in Shutdown.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		close(b.quit)
		b.wg.Wait()
		_ = b.client.Close()
	})
	return nil
}

func (b *Broker) closed() bool {
	select {
	case <-b.quit:
		return true
	default:
		return false
	}
}

func (b *Broker) subFor(redisChannel string) *subConn {
	return b.subs[xxhash.Sum64String(redisChannel)%uint64(len(b.subs))]
}

func (b *Broker) writerFor(redisChannel string) *writer {
	return b.writers[xxhash.Sum64String(redisChannel)%uint64(len(b.writers))]
}

// Subscribe makes this instance receive channel's publications from other
// instances: the first local subscriber's SUBSCRIBE. It never blocks: the
// subscriber connection's controller sends the command.
func (b *Broker) Subscribe(channel string) {
	if !b.started.Load() {
		return // the engine starts its broker before any subscription
	}
	rc := b.names.ch + channel
	b.subFor(rc).add(rc, true)
}

// Unsubscribe undoes Subscribe after the last local subscriber left.
func (b *Broker) Unsubscribe(channel string) {
	if !b.started.Load() {
		return
	}
	rc := b.names.ch + channel
	b.subFor(rc).remove(rc, true)
}

// Publish sends a publication to the other instances: one PUBLISH, queued for
// the channel's writer, or, on a history channel, the script that XADDs and
// PUBLISHes it (and the publication then comes back to this instance too,
// with its offset). It never blocks.
func (b *Broker) Publish(channel string, data []byte) error {
	rc := b.names.ch + channel
	if r := b.cfg.rule(channel); r != nil {
		return b.enqueue(rc, pubItem{
			channel: rc,
			stream:  b.names.hist + channel,
			rule:    r,
			head:    encodeHead(kindPublication, b.id),
			payload: append([]byte(nil), data...),
		})
	}
	return b.enqueue(rc, pubItem{channel: rc, payload: encode(kindPublication, b.id, data, "")})
}

// Broadcast sends a message for every connection of the other instances.
func (b *Broker) Broadcast(data []byte) error {
	return b.enqueue(b.names.broadcast, pubItem{channel: b.names.broadcast, payload: encode(kindBroadcast, b.id, data)})
}

func (b *Broker) enqueue(rc string, it pubItem) error {
	if !b.started.Load() {
		return ErrNotStarted
	}
	if b.closed() {
		return ErrClosed
	}
	if !b.up.Load() {
		b.m.unpublished(reasonUnavailable, 1)
		return ErrUnavailable
	}
	select {
	case b.writerFor(rc).q <- it:
		return nil
	default:
		b.m.unpublished(reasonQueueFull, 1)
		return ErrQueueFull
	}
}

// HasHistory reports whether channel keeps history (Config.History).
func (b *Broker) HasHistory(channel string) bool { return b.cfg.rule(channel) != nil }

// ready reports why the broker cannot do round trips yet, or nil.
func (b *Broker) ready() error {
	switch {
	case !b.started.Load():
		return ErrNotStarted
	case b.closed():
		return ErrClosed
	}
	return nil
}

// markDown records a Redis failure: Publish fails fast until the monitor's
// next successful PING.
func (b *Broker) markDown(err error) {
	if b.up.CompareAndSwap(true, false) || b.downSince.Load() == 0 {
		b.downSince.CompareAndSwap(0, time.Now().UnixNano())
		if err != nil && b.started.Load() && !b.closed() {
			b.log.Warn("redisbroker: redis command failed; publishing paused until it answers", "err", err)
		}
	}
}

// Healthy reports whether Redis answers and every subscriber connection is
// live.
func (b *Broker) Healthy() bool {
	if !b.up.Load() {
		return false
	}
	for _, s := range b.subs {
		if !s.live() {
			return false
		}
	}
	return true
}

// Health is for engine/server Options.Health: degraded while Redis is
// unreachable or a subscriber connection is down, with detail.
func (b *Broker) Health() (degraded bool, detail map[string]any) {
	if !b.started.Load() {
		return true, map[string]any{"redis": "not started"}
	}
	live := 0
	for _, s := range b.subs {
		if s.live() {
			live++
		}
	}
	healthy := b.Healthy()
	state := "up"
	if !healthy {
		state = "down"
	}
	detail = map[string]any{
		"redis":                state,
		"redis_subscribers":    fmt.Sprintf("%d/%d live", live, len(b.subs)),
		"redis_outage_seconds": b.m.outageSeconds(),
	}
	if since := b.downSince.Load(); since != 0 {
		detail["redis_down_for"] = time.Since(time.Unix(0, since)).Round(time.Millisecond).String()
	}
	return !healthy, detail
}

// backoff returns the wait before reconnection attempt n (from 0): exponential
// from ReconnectMin to ReconnectMax, with up to 25% jitter so instances don't
// reconnect in lockstep.
func (b *Broker) backoff(n int) time.Duration {
	d := b.cfg.ReconnectMin
	for i := 0; i < n && d < b.cfg.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, b.cfg.ReconnectMax)
	return d - time.Duration(float64(d)*0.25*rand01())
}

// sleep waits d or until Close; it reports false on Close.
func (b *Broker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.quit:
		return false
	}
}
