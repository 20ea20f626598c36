package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/shard"
	"github.com/shardhub/shardhub/shard/frame"
	"github.com/shardhub/shardhub/shard/transport"
)

// Engine is a sharded WebSocket fan-out hub. Mount it as an http.Handler at the
// WebSocket path; push with Broadcast, Publish and Send. All methods are safe for
// concurrent use. See the package documentation for who owns what.
type Engine struct {
	cfg      Config
	codec    Codec
	broker   Broker
	router   Router        // broker's Router, or nil
	history  *historyState // recovery gates when the broker is a HistoryBroker, else nil (history.go)
	shards   []*shard.Shard
	upgrader *gws.Upgrader
	metrics  *engineMetrics
	idPrefix string
	idSeq    atomic.Uint64
	limits   inboundLimits // per-connection inbound limits, from cfg
	logs     logLimiter    // rate limit of client-caused log lines

	queue chan outbound // the bounded broadcast queue, read by the coordinator
	quit  chan struct{} // closed when the coordinator must stop
	coord chan struct{} // closed when the coordinator has stopped

	chanMu sync.Mutex          // guards chans; held while calling Broker.Subscribe/Unsubscribe so their order matches.
	chans  map[string][]uint64 // channel → bitset of shards with local subscribers

	closing      atomic.Bool   // set when Shutdown begins; new upgrades get 503
	admitted     atomic.Int64  // WebSocket connections admitted and not yet finished (MaxConnections)
	shutdownOnce sync.Once     // runs the shutdown sequence once
	shutdownDone chan struct{} // closed when the shutdown sequence has finished

	readersMu     sync.Mutex    // guards the three fields below: the count of running read goroutines.
	readers       int           // read goroutines running
	readersClosed bool          // no new read goroutine may start
	readersZero   chan struct{} // closed when readersClosed and readers reaches zero
}

// outbound is one message in the broadcast queue, already encoded.
type outbound struct {
	target shard.Target
	key    string
	frame  *frame.Frame
}

// New validates cfg, starts the shards, the fan-out coordinator and the broker,
// and returns the engine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	e := &Engine{
		cfg:          cfg,
		codec:        cfg.Codec,
		broker:       cfg.Broker,
		queue:        make(chan outbound, cfg.BroadcastQueue),
		quit:         make(chan struct{}),
		coord:        make(chan struct{}),
		chans:        make(map[string][]uint64),
		shutdownDone: make(chan struct{}),
		readersZero:  make(chan struct{}),
	}
	if e.broker == nil {
		e.broker = MemoryBroker{}
	}
	e.router, _ = e.broker.(Router)
	if hb, ok := e.broker.(HistoryBroker); ok {
		e.history = newHistoryState(e, hb)
	}
	if cfg.InstanceID != "" {
		e.idPrefix = cfg.InstanceID
	} else {
		var b [6]byte
		_, _ = rand.Read(b[:])
		e.idPrefix = hex.EncodeToString(b[:])
	}
	e.cfg.InstanceID = e.idPrefix
	e.limits = newInboundLimits(&e.cfg)
	e.metrics = newEngineMetrics(e, cfg.Metrics)
	ping, idle := cfg.PingInterval, cfg.PongWait
	if ping < 0 {
		ping, idle = 0, 0 // no pings, so silence proves nothing
	}
	e.shards = make([]*shard.Shard, cfg.Shards)
	for i := range e.shards {
		e.shards[i] = shard.New(shard.Config{
			Index:     i,
			InboxSize: cfg.ShardInbox,
			Limits: shard.Limits{
				MaxMessages:  cfg.ConnQueueMessages,
				MaxBytes:     cfg.ConnQueueBytes,
				WriteTimeout: cfg.WriteTimeout,
			},
			MaxSubscriptions: cfg.MaxSubscriptions,
			ShutdownGrace:    cfg.ShutdownGrace,
			PingInterval:     ping,
			IdleTimeout:      idle,
			OnPanic:          func(where string, v any) { e.panicked(where, v, "") },
			Logger:           cfg.Logger,
			OnChannel:        e.onChannel,
			OnRemove:         e.onRemove,
		})
	}
	for _, s := range e.shards {
		go s.Run()
	}
	go e.coordinate()
	e.upgrader = e.newUpgrader()
	if err := e.broker.Start(brokerHandler{e}); err != nil {
		e.stop()
		return nil, fmt.Errorf("shardhub: starting broker: %w", err)
	}
	return e, nil
}

// Config returns the engine's configuration with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// InstanceID returns the id of this engine in its cluster.
func (e *Engine) InstanceID() string { return e.idPrefix }

// NumShards returns the number of shards.
func (e *Engine) NumShards() int { return len(e.shards) }

// ShardOf returns the index of the shard that owns connection id:
// xxhash64(id) mod the number of shards.
func (e *Engine) ShardOf(id string) int {
	return int(xxhash.Sum64String(id) % uint64(len(e.shards)))
}

func (e *Engine) shardFor(id string) *shard.Shard { return e.shards[e.ShardOf(id)] }

// newConnID returns a connection id unique in the cluster: the instance id and a
// per-instance sequence number.
func (e *Engine) newConnID() string {
	n := e.idSeq.Add(1)
	b := make([]byte, 0, len(e.idPrefix)+14)
	b = append(b, e.idPrefix...)
	b = append(b, '-')
	b = strconv.AppendUint(b, n, 36)
	return string(b)
}

// ValidChannel reports whether name is a valid channel name: 1 to
// Config.MaxChannelLength bytes of printable ASCII, without spaces.
func (e *Engine) ValidChannel(name string) bool {
	if name == "" || len(name) > e.cfg.MaxChannelLength {
		return false
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; b <= ' ' || b > '~' {
			return false
		}
	}
	return true
}

// Broadcast sends data to every connection (of every instance, when a broker links
// them). data is embedded as JSON when it is valid JSON, else as a JSON string. It
// never blocks: when the broadcast queue is full the message is dropped, counted,
// and ErrQueueFull returned.
func (e *Engine) Broadcast(data []byte) error {
	if err := e.checkPayload(data); err != nil {
		return err
	}
	if err := e.broadcastLocal(data); err != nil {
		return err
	}
	if err := e.broker.Broadcast(data); err != nil {
		e.metrics.brokerErrors.Inc()
		return fmt.Errorf("shardhub: broker broadcast: %w", err)
	}
	return nil
}

func (e *Engine) broadcastLocal(data []byte) error {
	f := frame.New(len(data) + 32)
	f.SetPayload(e.codec.AppendBroadcast(f.Payload(), data))
	f.Seal(e.codec.Opcode())
	return e.enqueue(outbound{target: shard.ToAll, frame: f}, e.metrics.broadcasts)
}

// Publish sends data to the subscribers of channel, on every instance. Like
// Broadcast it never blocks and returns ErrQueueFull when the message is dropped.
func (e *Engine) Publish(channel string, data []byte) error {
	if !e.ValidChannel(channel) {
		return fmt.Errorf("%w: %q", ErrInvalidChannel, truncate(channel, 64))
	}
	if err := e.checkPayload(data); err != nil {
		return err
	}
	if e.history != nil && e.history.b.HasHistory(channel) {
		return e.publishHistory(channel, data) // the broker assigns the offset (history.go)
	}
	if err := e.publishLocal(channel, "", data); err != nil {
		return err
	}
	if err := e.broker.Publish(channel, data); err != nil {
		e.metrics.brokerErrors.Inc()
		return fmt.Errorf("shardhub: broker publish: %w", err)
	}
	return nil
}

func (e *Engine) publishLocal(channel, offset string, data []byte) error {
	if !e.hasLocalSubscribers(channel) {
		e.metrics.publications.Inc()
		return nil
	}
	f := frame.New(len(data) + len(channel) + len(offset) + 48)
	f.SetPayload(e.codec.AppendPublication(f.Payload(), channel, offset, data))
	f.Seal(e.codec.Opcode())
	return e.enqueue(outbound{target: shard.ToChannel, key: channel, frame: f}, e.metrics.publications)
}

// Send sends data as a private message from the server to connection id, on this
// instance or, through a Router broker, on another. It returns ErrConnNotFound
// when no instance has the connection.
func (e *Engine) Send(id string, data []byte) error {
	if err := e.checkPayload(data); err != nil {
		return err
	}
	return e.sendPrivate(context.Background(), nil, id, "", data)
}

// sendPrivate delivers a private message from `from` (empty for the server).
// target is the already resolved recipient, or nil to resolve id.
func (e *Engine) sendPrivate(ctx context.Context, target *Target, id, from string, data []byte) error {
	if e.closing.Load() {
		return ErrShutdown
	}
	// The common case, a recipient on this instance, needs no Target: look it
	// up once and deliver.
	if target == nil || target.Local {
		if sc := e.shardFor(id).Lookup(id); sc != nil {
			return e.deliverPrivate(sc, from, data)
		}
		if target != nil {
			return ErrConnNotFound // it was here when resolved and has left
		}
		t, err := e.resolve(ctx, id)
		if err != nil {
			return err
		}
		if t.Local { // registered between the two lookups
			return e.sendPrivate(ctx, t, id, from, data)
		}
		target = t
	}
	if err := e.router.SendTo(ctx, target.Instance, id, from, data); err != nil {
		return err
	}
	e.metrics.privates.Inc()
	return nil
}

// deliverPrivate encodes a private message once and queues it on sc.
func (e *Engine) deliverPrivate(sc *shard.Conn, from string, data []byte) error {
	f := frame.New(len(data) + len(from) + 40)
	f.SetPayload(e.codec.AppendPrivate(f.Payload(), from, data))
	f.Seal(e.codec.Opcode())
	err := sc.TrySend(f)
	f.Release()
	if errors.Is(err, shard.ErrInboxFull) {
		e.metrics.dropped.Inc()
		return ErrQueueFull
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConnNotFound, err)
	}
	e.metrics.privates.Inc()
	return nil
}

// resolve finds the connection a private message to id would reach.
func (e *Engine) resolve(ctx context.Context, id string) (*Target, error) {
	if sc := e.shardFor(id).Lookup(id); sc != nil {
		t := &Target{ID: id, Instance: e.idPrefix, Local: true}
		if c, ok := sc.Value.(*Conn); ok {
			t.UserID = c.user
		}
		return t, nil
	}
	if e.router == nil {
		return nil, ErrConnNotFound
	}
	inst, err := e.router.Locate(ctx, id)
	if err != nil {
		return nil, err
	}
	if inst == e.idPrefix {
		return nil, ErrConnNotFound // registry lag: it was here and has left
	}
	return &Target{ID: id, Instance: inst}, nil
}

func (e *Engine) checkPayload(data []byte) error {
	if len(data) > e.cfg.MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(data), e.cfg.MaxMessageSize)
	}
	return nil
}

// enqueue puts an encoded message on the broadcast queue without blocking.
func (e *Engine) enqueue(o outbound, accepted counter) error {
	if e.closing.Load() {
		o.frame.Release()
		return ErrShutdown
	}
	select {
	case e.queue <- o:
		accepted.Inc()
		return nil
	default:
		o.frame.Release()
		e.metrics.dropped.Inc()
		return ErrQueueFull
	}
}

// coordinate is the fan-out coordinator: it hands each queued frame to every shard
// concerned, which write it to their connections in parallel. Runs in its own
// goroutine until Shutdown.
func (e *Engine) coordinate() {
	defer close(e.coord)
	var targets []uint64
	for {
		select {
		case o := <-e.queue:
			targets = e.fanOut(o, targets)
		case <-e.quit:
			for {
				select {
				case o := <-e.queue:
					o.frame.Release()
				default:
					return
				}
			}
		}
	}
}

func (e *Engine) fanOut(o outbound, targets []uint64) []uint64 {
	switch o.target {
	case shard.ToAll:
		for _, s := range e.shards {
			o.frame.Retain(1)
			s.Deliver(shard.Delivery{Target: shard.ToAll, Frame: o.frame})
		}
	case shard.ToChannel:
		e.chanMu.Lock()
		targets = append(targets[:0], e.chans[o.key]...)
		e.chanMu.Unlock()
		for w, word := range targets {
			for word != 0 {
				i := w*64 + bits.TrailingZeros64(word)
				word &= word - 1
				o.frame.Retain(1)
				e.shards[i].Deliver(shard.Delivery{Target: shard.ToChannel, Key: o.key, Frame: o.frame})
			}
		}
	case shard.ToConn:
		o.frame.Retain(1)
		e.shardFor(o.key).Deliver(shard.Delivery{Target: shard.ToConn, Key: o.key, Frame: o.frame})
	}
	o.frame.Release()
	return targets
}

func (e *Engine) hasLocalSubscribers(channel string) bool {
	e.chanMu.Lock()
	_, ok := e.chans[channel]
	e.chanMu.Unlock()
	return ok
}

// onChannel runs on a shard goroutine when the shard gains its first subscriber
// of channel or loses its last; the engine subscribes the broker on the first
// local subscriber and unsubscribes it after the last.
func (e *Engine) onChannel(idx int, channel string, active bool) {
	e.chanMu.Lock()
	defer e.chanMu.Unlock()
	set := e.chans[channel]
	w, bit := idx/64, uint64(1)<<(idx%64)
	if active {
		if set == nil {
			set = make([]uint64, (len(e.shards)+63)/64)
			e.chans[channel] = set
			e.broker.Subscribe(channel)
		}
		set[w] |= bit
		return
	}
	if set == nil {
		return
	}
	set[w] &^= bit
	for _, word := range set {
		if word != 0 {
			return
		}
	}
	delete(e.chans, channel)
	e.broker.Unsubscribe(channel)
}

// onRemove runs on a shard goroutine after a connection left it.
func (e *Engine) onRemove(sc *shard.Conn) {
	if e.router != nil {
		e.router.ConnRemoved(sc.ID())
	}
}

// readerStart counts a new read goroutine, unless shutdown has passed the point
// where it waits for them.
func (e *Engine) readerStart() bool {
	e.readersMu.Lock()
	defer e.readersMu.Unlock()
	if e.readersClosed {
		return false
	}
	e.readers++
	return true
}

func (e *Engine) readerDone() {
	e.readersMu.Lock()
	defer e.readersMu.Unlock()
	e.readers--
	if e.readers == 0 && e.readersClosed {
		close(e.readersZero)
	}
}

// Channels returns the channels with at least one subscriber on this instance.
func (e *Engine) Channels() []string {
	e.chanMu.Lock()
	defer e.chanMu.Unlock()
	names := make([]string, 0, len(e.chans))
	for name := range e.chans {
		names = append(names, name)
	}
	return names
}

// Attach registers a connection that writes to t instead of a WebSocket: an
// in-memory sink for benchmarks, or another transport an embedder brings. It has
// no read side; close it with Conn.Close.
func (e *Engine) Attach(id string, t transport.Transport) (*Conn, error) {
	if e.closing.Load() {
		return nil, ErrShutdown
	}
	if id == "" {
		id = e.newConnID()
	}
	c := e.newConn(id, t)
	if err := c.register(); err != nil {
		return nil, err
	}
	return c, nil
}

// Stats is a snapshot of the engine.
type Stats struct {
	Instance       string       `json:"instance"`
	Connections    int          `json:"connections"`
	Channels       int          `json:"channels"`
	QueueLength    int          `json:"broadcast_queue_length"`
	QueueCapacity  int          `json:"broadcast_queue_capacity"`
	Shards         []ShardStats `json:"shards"`
	Deliveries     int64        `json:"deliveries"`
	BytesSent      int64        `json:"bytes_sent"`
	Forced         int64        `json:"forced_disconnects"`
	WriteErrors    int64        `json:"write_errors"`
	Dropped        int64        `json:"dropped_broadcasts"`
	Broadcasts     int64        `json:"broadcasts"`
	Publications   int64        `json:"publications"`
	Privates       int64        `json:"private_messages"`
	MessagesIn     int64        `json:"messages_in"`
	AuthDenials    int64        `json:"authorizer_denials"`
	ShuttingDown   bool         `json:"shutting_down"`
	ConnectedTotal int64        `json:"connected_total"`
}

// ShardStats is one shard's part of Stats.
type ShardStats struct {
	Index         int   `json:"index"`
	Connections   int   `json:"connections"`
	Channels      int   `json:"channels"`
	Subscriptions int   `json:"subscriptions"`
	Broadcasts    int64 `json:"broadcasts"`
	Publications  int64 `json:"publications"`
	Privates      int64 `json:"private_messages"`
	Deliveries    int64 `json:"deliveries"`
	Forced        int64 `json:"forced_disconnects"`
}

// Stats asks every shard for a snapshot. During shutdown, stopped shards report
// their counters only.
func (e *Engine) Stats() Stats {
	st := Stats{
		Instance:      e.idPrefix,
		QueueLength:   len(e.queue),
		QueueCapacity: cap(e.queue),
		Dropped:       int64(e.metrics.dropped.Get()),
		Broadcasts:    int64(e.metrics.broadcasts.Get()),
		Publications:  int64(e.metrics.publications.Get()),
		Privates:      int64(e.metrics.privates.Get()),
		MessagesIn:    int64(e.metrics.messagesIn.Get()),
		AuthDenials:   int64(e.metrics.authDenials.Get()),
		ShuttingDown:  e.closing.Load(),
	}
	e.chanMu.Lock()
	st.Channels = len(e.chans)
	e.chanMu.Unlock()
	for _, s := range e.shards {
		ss := s.Stats()
		st.Shards = append(st.Shards, ShardStats{
			Index:         ss.Index,
			Connections:   int(ss.Counters.Conns),
			Channels:      ss.Channels,
			Subscriptions: ss.Subscriptions,
			Broadcasts:    ss.Messages[shard.ToAll],
			Publications:  ss.Messages[shard.ToChannel],
			Privates:      ss.Messages[shard.ToConn],
			Deliveries:    ss.Counters.Deliveries,
			Forced:        ss.Counters.Forced,
		})
		st.Connections += int(ss.Counters.Conns)
		st.Deliveries += ss.Counters.Deliveries
		st.BytesSent += ss.Counters.Bytes
		st.Forced += ss.Counters.Forced
		st.WriteErrors += ss.Counters.WriteErrors
		st.ConnectedTotal += ss.Counters.Registered
	}
	return st
}

// Connections returns the number of connections, from the shards' counters.
func (e *Engine) Connections() int {
	n := int64(0)
	for _, s := range e.shards {
		n += s.Counters().Conns
	}
	return int(n)
}

// Shutdown closes the engine: new upgrades are refused, every connection gets
// close 1001 Going Away, the shards keep serving requests while connections leave
// (up to Config.ShutdownGrace; an empty engine does not wait), then every send side
// still open is closed, and the broker is closed last. It is idempotent and safe to
// call concurrently; each call waits for the sequence to finish or for ctx.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.shutdownOnce.Do(func() { go e.stop() })
	select {
	case <-e.shutdownDone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shardhub: shutdown: %w", ctx.Err())
	}
}

// Done is closed once Shutdown has finished.
func (e *Engine) Done() <-chan struct{} { return e.shutdownDone }

func (e *Engine) stop() {
	defer close(e.shutdownDone)
	e.closing.Store(true)
	for _, s := range e.shards {
		s.Shutdown()
	}
	for _, s := range e.shards {
		<-s.Done()
	}
	close(e.quit)
	<-e.coord
	e.readersMu.Lock()
	e.readersClosed = true
	if e.readers == 0 {
		close(e.readersZero)
	}
	e.readersMu.Unlock()
	<-e.readersZero
	if err := e.broker.Close(); err != nil && !errors.Is(err, context.Canceled) {
		e.cfg.Logger.Warn("shardhub: closing broker", "err", err)
	}
}
