package redisbroker

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
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
	cfg         Config
	client      *redis.Client
	probeClient *redis.Client // one connection of the prober's own
	log         *slog.Logger

	// Set by Start, read-only after.
	h        engine.BrokerHandler
	id       string
	started  atomic.Bool
	subs     []*subConn
	writers  []*writer
	reg      *registry
	m        *brokerMetrics
	names    names
	epoch    uint64 // Start's time in ns: numbers this broker's sequences (seq.go)
	headroom int    // bytes reserved in front of each message for its envelope head

	streams atomic.Uint64 // last sequence stream number given (seq.go)

	// up is false from a failed command until the monitor's next successful
	// PING. ready is the cluster path: up, every subscriber connection live
	// and, after an outage, the peers waited for (monitor.go). Writers send
	// only while ready is set; Healthy reports it.
	up, ready atomic.Bool
	downSince atomic.Int64  // unix ns of the first failure of the current outage; 0 while ready
	upSince   atomic.Int64  // unix ns of the last recovery: no failure is dated before it
	syncWant  atomic.Bool   // a subscriber connection came back: ask the cluster to announce (seq.go)
	poke      chan struct{} // capacity 1: the monitor should look now
	probeReq  chan struct{} // capacity 1: the prober should probe now
	clock     atomic.Int64  // the monitor's coarse clock, unix seconds (seq.go expiry)
	skew      atomic.Int64  // Redis' clock minus ours, ms (private.go)
	skewKnown atomic.Bool   // skew was measured

	markerSeq atomic.Uint64 // History's sync markers
	markers   sync.Map      // marker token → chan struct{} closed when it comes back

	logMu   sync.Mutex           // guards logLast.
	logLast map[string]time.Time // key → last time logLimited logged it

	quit      chan struct{}  // closed by Close: every goroutine stops
	wg        sync.WaitGroup // the goroutines started by Start, except the hand-off workers
	workers   sync.WaitGroup // the hand-off workers: they stop after the readers (Close)
	closeOnce sync.Once      // makes Close idempotent
	abandon   bool           // set before quit by tests simulating a crash: skip the clean-up
}

var (
	_ engine.Broker        = (*Broker)(nil)
	_ engine.Router        = (*Broker)(nil)
	_ engine.HistoryBroker = (*Broker)(nil)
	_ engine.LedgerBroker  = (*Broker)(nil)
)

// names are the Redis key and channel names of one instance.
type names struct {
	prefix, ch, hist, conn, instance, instances, broadcast, sync, inst string
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
		sync:      prefix + "sync",
		inst:      prefix + "inst:" + id,
	}
}

// probeChannel is the probe channel of subscriber connection i of instance.
func (n *names) probeChannel(instance string, i int) string {
	return n.prefix + "probe:" + instance + ":" + strconv.Itoa(i)
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
	popt := *opt
	popt.PoolSize, popt.MinIdleConns, popt.MaxIdleConns = 1, 0, 1
	b := &Broker{
		cfg:         cfg,
		client:      redis.NewClient(opt),
		probeClient: redis.NewClient(&popt),
		log:         cfg.Logger,
		quit:        make(chan struct{}),
		poke:        make(chan struct{}, 1),
		probeReq:    make(chan struct{}, 1),
		logLast:     make(map[string]time.Time),
	}
	return b, nil
}

// Client returns the go-redis client the broker uses (for tests and tools).
func (b *Broker) Client() *redis.Client { return b.client }

// Start connects to Redis and begins handing other instances' messages to h.
// A Redis that cannot be reached is not an error: the broker starts degraded
// (local delivery works, publications wait in the backlog), logs it, and
// keeps reconnecting.
func (b *Broker) Start(h engine.BrokerHandler) error {
	if !b.started.CompareAndSwap(false, true) {
		return fmt.Errorf("redisbroker: Start called twice")
	}
	b.h = h
	b.id = h.InstanceID()
	b.names = newNames(b.cfg.Prefix, b.id)
	b.log = b.log.With("instance", b.id)
	b.epoch = uint64(time.Now().UnixNano())
	b.clock.Store(time.Now().Unix())
	b.headroom = maxSeqHead(b.id)

	b.subs = make([]*subConn, b.cfg.PubSubConns)
	for i := range b.subs {
		b.subs[i] = newSubConn(b, i)
	}
	maxMsgs := b.cfg.BacklogMessages
	if maxMsgs < 0 { // no backlog: still a bounded queue while Redis answers
		maxMsgs = DefaultBacklogMessages
	}
	b.writers = make([]*writer, b.cfg.Writers)
	for i := range b.writers {
		b.writers[i] = newWriter(b, maxMsgs/b.cfg.Writers, b.cfg.BacklogBytes/int64(b.cfg.Writers))
	}
	b.reg = newRegistry(b)
	b.m = newBrokerMetrics(b, h.Metrics())

	ctx, cancel := context.WithTimeout(context.Background(), b.client.Options().DialTimeout)
	sent := time.Now()
	now, err := b.client.Time(ctx).Result()
	cancel()
	if err == nil {
		b.measureSkew(sent, time.Now(), now)
	}
	if err != nil {
		b.log.Error("redisbroker: redis unreachable at start; local delivery works, cross-instance delivery waits for it",
			"addr", b.client.Options().Addr, "err", err)
		b.markDown(nil, time.Now())
	} else {
		b.up.Store(true)
		b.log.Info("redisbroker: connected", "addr", b.client.Options().Addr, "pubsub_conns", b.cfg.PubSubConns,
			"writers", b.cfg.Writers, "history_rules", len(b.cfg.History))
	}

	// The broadcast, instance and sync channels are permanent subscriptions.
	for _, rc := range []string{b.names.broadcast, b.names.inst, b.names.sync} {
		b.subFor(rc).add(rc, true)
	}
	for _, s := range b.subs {
		b.wg.Add(1)
		go s.run()
		b.workers.Add(1)
		go s.work()
	}
	for _, w := range b.writers {
		b.wg.Add(1)
		go w.run()
	}
	b.wg.Add(3)
	go b.reg.run()
	go b.monitor()
	go b.prober()
	return nil
}

// Close stops the broker: the backlog is flushed (briefly, if Redis answers;
// the rest is counted dropped, reason shutdown), this instance's registry
// entries are deleted, the connections closed, and what the subscriber
// connections had read is handed to the engine. Idempotent. The engine calls
// it last in Shutdown.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		close(b.quit)
		b.wg.Wait()
		for _, s := range b.subs {
			s.handoff.close() // the readers have stopped: nothing offers any more
		}
		b.workers.Wait()
		_ = b.client.Close()
		_ = b.probeClient.Close()
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

// newStream returns a new sequence stream number (seq.go).
func (b *Broker) newStream() uint64 { return b.streams.Add(1) }

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

// Publish sends a publication to the other instances: one PUBLISH, queued in
// the channel's writer's backlog, or, on a history channel, the script that
// XADDs and PUBLISHes it (and the publication then comes back to this
// instance too, with its offset). It never blocks. nil means the message is
// in the ledger (Handed): it will be published, or counted dropped with a
// reason. An error means it was dropped at once (counted too): ErrQueueFull
// past the backlog bounds, ErrUnavailable while Redis is down without a
// backlog, ErrClosed after Close.
func (b *Broker) Publish(channel string, data []byte) error {
	return b.enqueue(pubItem{rc: b.names.ch + channel, kind: kindPublication, rule: b.cfg.rule(channel)}, data)
}

// Broadcast sends a message for every connection of the other instances. Its
// result means what Publish's does.
func (b *Broker) Broadcast(data []byte) error {
	return b.enqueue(pubItem{rc: b.names.broadcast, kind: kindBroadcast}, data)
}

func (b *Broker) enqueue(it pubItem, data []byte) error {
	if !b.started.Load() {
		return ErrNotStarted
	}
	m := b.m
	m.handed.Inc()
	if b.closed() {
		m.dropped[engine.DropShutdown].Inc()
		return ErrClosed
	}
	if b.cfg.BacklogMessages < 0 && !b.ready.Load() {
		m.dropped[engine.DropBrokerUnavailable].Inc()
		return ErrUnavailable
	}
	it.start = -1
	it.buf = make([]byte, b.headroom+len(data))
	copy(it.buf[b.headroom:], data)
	if err := b.writerFor(it.rc).push(it, len(data)); err != nil {
		m.dropped[engine.DropBacklogOverflow].Inc()
		return err
	}
	return nil
}

// Ledger returns the broker's account of the messages that cross it
// (engine.BrokerLedger): Handed = Published + Σ Dropped + Backlog at any
// quiescent moment; Received and Lost are other instances' messages, outside
// that balance. It does not block on the network.
func (b *Broker) Ledger() engine.BrokerLedger {
	if !b.started.Load() {
		return engine.BrokerLedger{Dropped: map[engine.DropReason]uint64{}}
	}
	m := b.m
	l := engine.BrokerLedger{
		Handed:    m.handed.Get(),
		Published: m.published.Get(),
		Received:  m.received.Get(),
		Lost:      m.lost.Get(),
		Dropped:   make(map[engine.DropReason]uint64, len(m.dropped)),
	}
	for r, c := range m.dropped {
		l.Dropped[r] = c.Get()
	}
	for _, w := range b.writers {
		n, _ := w.backlog()
		l.Backlog += uint64(n)
	}
	return l
}

// HasHistory reports whether channel keeps history (Config.History).
func (b *Broker) HasHistory(channel string) bool { return b.cfg.rule(channel) != nil }

// usable reports why the broker cannot do round trips yet, or nil.
func (b *Broker) usable() error {
	switch {
	case !b.started.Load():
		return ErrNotStarted
	case b.closed():
		return ErrClosed
	}
	return nil
}

// markDown records a failed command: Redis is not answering (at is when the
// command was sent). Writers keep their backlog until the monitor finds the
// cluster path ready again.
func (b *Broker) markDown(err error, at time.Time) {
	b.noteFailure(at)
	if b.up.Swap(false) && err != nil && b.started.Load() && !b.closed() {
		b.log.Warn("redisbroker: redis command failed; publications wait in the backlog until it answers", "err", err)
	}
}

// noteFailure makes the cluster path not ready and dates the outage from at
// (the earliest failure wins, but none is dated before the last recovery).
func (b *Broker) noteFailure(at time.Time) {
	b.ready.Store(false)
	if b.closed() {
		return
	}
	t := max(at.UnixNano(), b.upSince.Load())
	for {
		cur := b.downSince.Load()
		if cur != 0 && cur <= t {
			return
		}
		if b.downSince.CompareAndSwap(cur, t) {
			return
		}
	}
}

// Healthy reports whether the cluster path is ready: Redis answers, every
// subscriber connection is live (its subscriptions confirmed), and after an
// outage the other instances were waited for (Config.PeerWait).
func (b *Broker) Healthy() bool { return b.ready.Load() }

// state names the cluster path's state for Health.
func (b *Broker) state() string {
	switch {
	case b.ready.Load():
		return "up"
	case b.up.Load():
		return "recovering" // subscriptions not confirmed yet, or waiting for the peers
	}
	return "down"
}

// Health is for engine/server Options.Health: degraded while the cluster
// path is not ready (Healthy), with detail.
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
	msgs, bytes := 0, int64(0)
	for _, w := range b.writers {
		n, by := w.backlog()
		msgs += n
		bytes += by
	}
	detail = map[string]any{
		"redis":                b.state(),
		"redis_subscribers":    fmt.Sprintf("%d/%d live", live, len(b.subs)),
		"redis_outage_seconds": b.m.outageSeconds(),
		"redis_backlog":        msgs,
		"redis_backlog_bytes":  bytes,
	}
	if since := b.downSince.Load(); since != 0 {
		detail["redis_down_for"] = time.Since(time.Unix(0, since)).Round(time.Millisecond).String()
	}
	return !healthy, detail
}

// logLimited logs msg at warning level at most once per logEvery for key.
func (b *Broker) logLimited(key, msg string, args ...any) {
	now := time.Now()
	b.logMu.Lock()
	last, ok := b.logLast[key]
	if ok && now.Sub(last) < logEvery {
		b.logMu.Unlock()
		return
	}
	b.logLast[key] = now
	b.logMu.Unlock()
	b.log.Warn(msg, args...)
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

// sleep waits d, until wake or until Close; it reports false on Close.
func (b *Broker) sleep(d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return true
	case <-b.quit:
		return false
	}
}
