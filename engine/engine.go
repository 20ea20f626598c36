package engine

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine/internal/reactor"
	"github.com/shardhub/shardhub/internal/ratelog"
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
	history  HistoryBroker // the broker when it keeps history, else nil (history.go)
	shards   []*shard.Shard
	reactor  *reactor.Reactor // polls TCP connections' reads; nil where unavailable (poll.go)
	upgrader *gws.Upgrader
	metrics  *engineMetrics
	idPrefix string
	limits   inboundLimits // per-connection inbound limits, from cfg
	// checkText is set when the codec is not JSONCodec and sends text frames:
	// its payloads are checked for valid UTF-8 (encode).
	checkText bool
	clientLog *slog.Logger // the log lines clients can cause, rate-limited (logging.go)

	queue       chan outbound // the bounded broadcast queue, read by the coordinator
	clientQueue chan outbound // client publications' own bounded queue (fanout.go)
	ledger      ledger        // the message stage of the ledger
	quit        chan struct{} // closed when the coordinator must stop
	coord       chan struct{} // closed when the coordinator has stopped

	chanMu sync.Mutex          // guards chans; held while calling Broker.Subscribe/Unsubscribe so their order matches.
	chans  map[string][]uint64 // channel → bitset of shards with local subscribers

	closing      atomic.Bool   // set when Shutdown begins; new upgrades get 503
	admitted     atomic.Int64  // WebSocket connections admitted and not yet finished (MaxConnections)
	shutdownOnce sync.Once     // runs the shutdown sequence once
	shutdownDone chan struct{} // closed when the shutdown sequence has finished

	readersMu     sync.Mutex    // guards the three fields below: the count of connections being read.
	readers       int           // connections whose reading has not finished (read loop, or reactor until mailFinish)
	readersClosed bool          // no new reader may start
	readersZero   chan struct{} // closed when readersClosed and readers reaches zero
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
		clientQueue:  make(chan outbound, cfg.ClientPublishQueue),
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
		e.history = hb
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
	e.clientLog = ratelog.Logger(e.cfg.Logger)
	_, isJSON := e.codec.(JSONCodec)
	e.checkText = !isJSON && e.codec.Opcode() == frame.OpText
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
			Logger:           e.clientLog, // shard lines are about one connection: rate-limited
			OnChannel:        e.onChannel,
			OnRemove:         e.onRemove,
		})
	}
	for _, s := range e.shards {
		go s.Run()
	}
	go e.coordinate()
	if cfg.ReadPollers >= 0 {
		r, err := reactor.New(reactor.Config{
			Pollers: cfg.ReadPollers,
			OnPanic: func(v any) { e.panicked("reactor", v, "") },
		})
		if err == nil {
			e.reactor = r
		} else if !errors.Is(err, reactor.ErrUnsupported) {
			e.stop()
			return nil, fmt.Errorf("shardhub: starting the read reactor: %w", err)
		}
	}
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

// newConnID returns a connection id unique in the cluster and unguessable:
// the instance id and 96 random bits. A connection id is what a client needs to
// send to another (when sends are allowed), so it must not be enumerable.
func (e *Engine) newConnID() string {
	var r [12]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand)
	b := make([]byte, 0, len(e.idPrefix)+1+16)
	b = append(b, e.idPrefix...)
	b = append(b, '-')
	b = base64.RawURLEncoding.AppendEncode(b, r[:])
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
func (e *Engine) Broadcast(data []byte) error { return e.broadcast(srcServer, data) }

func (e *Engine) broadcast(src source, data []byte) error {
	if err := e.checkPayload(data); err != nil {
		return err
	}
	if err := e.broadcastLocal(src, data); err != nil {
		return err
	}
	if err := e.broker.Broadcast(data); err != nil {
		e.metrics.brokerErrors.Inc()
		return fmt.Errorf("%w: broadcast: %w", ErrBrokerUnavailable, err)
	}
	return nil
}

// Publish sends data to the subscribers of channel, on every instance. Like
// Broadcast it never blocks and returns ErrQueueFull when the message is dropped.
func (e *Engine) Publish(channel string, data []byte) error {
	return e.publish(srcServer, channel, data)
}

func (e *Engine) publish(src source, channel string, data []byte) error {
	if !e.ValidChannel(channel) {
		return fmt.Errorf("%w: %q", ErrInvalidChannel, truncate(channel, 64))
	}
	if err := e.checkPayload(data); err != nil {
		return err
	}
	if e.history != nil && e.history.HasHistory(channel) {
		return e.publishHistory(src, channel, data) // the broker assigns the offset (history.go)
	}
	if err := e.publishLocal(src, channel, "", data); err != nil {
		return err
	}
	if err := e.broker.Publish(channel, data); err != nil {
		e.metrics.brokerErrors.Inc()
		return fmt.Errorf("%w: publish: %w", ErrBrokerUnavailable, err)
	}
	return nil
}

func (e *Engine) checkPayload(data []byte) error {
	if len(data) > e.cfg.MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(data), e.cfg.MaxMessageSize)
	}
	return nil
}

// onRemove runs on a shard goroutine after a connection left it.
func (e *Engine) onRemove(sc *shard.Conn) {
	if e.router != nil {
		e.router.ConnRemoved(sc.ID())
	}
}

// readerStart counts a connection whose reading starts, unless shutdown has
// passed the point where it waits for them.
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
	if e.reactor != nil {
		e.reactor.Close()
	}
	if err := e.broker.Close(); err != nil && !errors.Is(err, context.Canceled) {
		e.cfg.Logger.Warn("shardhub: closing broker", "err", err)
	}
}

// IsSystemChannel reports whether channel is reserved for the server
// ("$sys.stats" and every other name starting with "$"): clients may subscribe
// to such channels but never publish to them.
func IsSystemChannel(channel string) bool { return strings.HasPrefix(channel, "$") }
