package redisbroker

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults applied by Config for zero fields.
const (
	DefaultPrefix            = "ws:"
	DefaultPubSubConns       = 4
	DefaultWriters           = 2
	DefaultBacklogMessages   = 131072
	DefaultBacklogBytes      = 64 << 20
	DefaultHandoffQueue      = 16384
	DefaultPeerWait          = 3 * time.Second
	DefaultMaxBatch          = 512
	DefaultInstanceTTL       = 30 * time.Second
	DefaultConnTTL           = 90 * time.Second
	DefaultRegistryFlush     = 200 * time.Millisecond
	DefaultProbeInterval     = 5 * time.Second
	DefaultProbeTimeout      = 3 * time.Second
	DefaultReconnectMin      = 100 * time.Millisecond
	DefaultReconnectMax      = 5 * time.Second
	DefaultHistorySize       = 100
	DefaultHistoryTTL        = 5 * time.Minute
	DefaultSendTimeout       = 2 * time.Second
	maxAllowedPubSubConns    = 64
	maxAllowedWriters        = 64
	registryChunk            = 1000 // commands per registry pipeline
	subscribeChunk           = 1000 // channels per SUBSCRIBE command
	defaultDialTimeout       = 2 * time.Second
	defaultCommandTimeout    = 3 * time.Second
	minAllowedHeartbeatRatio = 2 // a TTL must cover at least two refreshes
)

// Config configures a Broker. The zero value, with URL set, is a working
// broker; every zero field means the default its comment names.
type Config struct {
	// URL of the Redis server, e.g. redis://127.0.0.1:6379/0 (go-redis
	// ParseURL syntax, so rediss:// and ?dial_timeout=… work). Ignored when
	// Options is set; one of the two is required.
	URL string
	// Options configure the go-redis client directly. Nil means
	// ParseURL(URL). Either way, zero MaxRetries means no retry (a retried
	// pipeline could publish a message twice), zero DialerRetries one dial
	// attempt (the broker backs off itself), zero DialTimeout 2s and zero
	// Read/WriteTimeout 3s.
	Options *redis.Options
	// Prefix starts every key and pub/sub channel name, so several clusters
	// can share one Redis. Zero means "ws:".
	Prefix string
	// PubSubConns is the number of Redis connections the subscriptions are
	// multiplexed over; each channel is hashed to one. Zero means 4.
	PubSubConns int
	// Writers is the number of publishing goroutines, each with its own queue;
	// a channel always goes through the same one, so its order is kept. Zero
	// means 2.
	Writers int
	// BacklogMessages and BacklogBytes bound what waits for Redis, across
	// all writers (each gets an equal share): the messages queued while Redis
	// answers, and those kept while it does not (an outage, a frozen or
	// paused server) until this instance's subscriptions are confirmed again,
	// then sent in order. Past either bound a message is not sent to the
	// other instances: Publish returns ErrQueueFull and
	// shardhub_broker_dropped_total{reason="backlog_overflow"} counts it;
	// callers never block. Zero means 131072 messages and 64 MiB (about two
	// seconds of a busy instance's traffic, minutes of a quiet one's).
	// BacklogMessages < 0 disables the backlog: while Redis is not answering,
	// Publish fails at once with ErrUnavailable and what was queued is
	// dropped (reason "broker_unavailable").
	BacklogMessages int
	BacklogBytes    int64
	// MaxBatch is the most commands a writer sends in one pipeline. Zero means
	// 512.
	MaxBatch int
	// InstanceTTL is the TTL of the instance heartbeat key; it is refreshed
	// every HeartbeatInterval. An instance that stops heartbeating leaves the
	// cluster listing after it. Zero means 30s.
	InstanceTTL time.Duration
	// HeartbeatInterval is the heartbeat period. Zero means InstanceTTL / 3.
	HeartbeatInterval time.Duration
	// ConnTTL is the TTL of each connection's registry key; keys are refreshed
	// every ConnRefresh, in pipelined batches. Zero means 90s.
	ConnTTL time.Duration
	// ConnRefresh is the registry refresh period. Zero means ConnTTL / 3.
	ConnRefresh time.Duration
	// RegistryFlush is how often connections added and removed since the last
	// flush are written to the registry. Zero means 200ms.
	RegistryFlush time.Duration
	// ProbeInterval is the period of the liveness probe of each subscriber
	// connection: a PUBLISH on the connection's probe channel, after which
	// the connection must deliver something (the probe or any message)
	// within ProbeTimeout of Redis answering the PUBLISH — or of the probe
	// being due, if Redis does not answer (frozen) — or it is declared dead
	// and replaced. Zero means 5s; negative disables probes.
	ProbeInterval time.Duration
	// ProbeTimeout: see ProbeInterval. It is also how long a new subscriber
	// connection may take to get its first SUBSCRIBE confirmed before it is
	// replaced (while probes are enabled). Zero means 3s.
	ProbeTimeout time.Duration
	// HandoffQueue bounds, per subscriber connection, the messages read from
	// Redis and not yet handed to the engine: the connection's reader never
	// waits for the engine. When it is full a message is dropped and counted
	// lost (shardhub_broker_lost_total and
	// shardhub_redis_handoff_overflow_total). Zero means 16384.
	HandoffQueue int
	// PeerWait bounds how long, after an outage, this instance holds its
	// backlog until the other instances it knew are subscribed again (their
	// probe channels have a subscriber), so that what it flushes reaches
	// them. Zero means 3s; negative means no wait.
	PeerWait time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnection attempts. Zero means 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// SendTimeout bounds the round trips of Locate and SendTo. Zero means 2s.
	SendTimeout time.Duration
	// History lists the channels that keep history in a Redis stream. The
	// longest matching prefix wins; no match (and the zero value) means no
	// history.
	History []HistoryRule
	// Logger receives structured logs. Nil means slog.Default().
	Logger *slog.Logger
}

// HistoryRule enables history on the channels starting with Prefix.
type HistoryRule struct {
	// Prefix of the channels covered; "" covers every channel.
	Prefix string
	// Size is the most publications kept per channel (XADD MAXLEN). Zero means
	// 100.
	Size int
	// TTL drops a channel's history this long after its last publication. Zero
	// means 5m.
	TTL time.Duration
}

func (cfg Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	defInt(&cfg.PubSubConns, DefaultPubSubConns)
	defInt(&cfg.Writers, DefaultWriters)
	defInt(&cfg.BacklogMessages, DefaultBacklogMessages)
	if cfg.BacklogBytes == 0 {
		cfg.BacklogBytes = DefaultBacklogBytes
	}
	defInt(&cfg.HandoffQueue, DefaultHandoffQueue)
	def(&cfg.PeerWait, DefaultPeerWait)
	defInt(&cfg.MaxBatch, DefaultMaxBatch)
	def(&cfg.InstanceTTL, DefaultInstanceTTL)
	def(&cfg.HeartbeatInterval, cfg.InstanceTTL/3)
	def(&cfg.ConnTTL, DefaultConnTTL)
	def(&cfg.ConnRefresh, cfg.ConnTTL/3)
	def(&cfg.RegistryFlush, DefaultRegistryFlush)
	def(&cfg.ProbeInterval, DefaultProbeInterval)
	def(&cfg.ProbeTimeout, DefaultProbeTimeout)
	def(&cfg.ReconnectMin, DefaultReconnectMin)
	def(&cfg.ReconnectMax, DefaultReconnectMax)
	def(&cfg.SendTimeout, DefaultSendTimeout)
	rules := make([]HistoryRule, len(cfg.History))
	for i, r := range cfg.History {
		defInt(&r.Size, DefaultHistorySize)
		def(&r.TTL, DefaultHistoryTTL)
		rules[i] = r
	}
	cfg.History = rules
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// Validate reports the first invalid field, after defaults are applied. The
// error wraps ErrInvalidConfig and names the field.
func (cfg Config) Validate() error {
	c := cfg.withDefaults()
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Options == nil && c.URL == "":
		return bad("URL", "empty: set URL (redis://host:port/db) or Options")
	case c.PubSubConns < 1 || c.PubSubConns > maxAllowedPubSubConns:
		return bad("PubSubConns", "%d is outside 1..%d", c.PubSubConns, maxAllowedPubSubConns)
	case c.Writers < 1 || c.Writers > maxAllowedWriters:
		return bad("Writers", "%d is outside 1..%d", c.Writers, maxAllowedWriters)
	case c.BacklogMessages > 0 && c.BacklogMessages < c.Writers:
		return bad("BacklogMessages", "%d is below Writers (%d): each writer needs room for one", c.BacklogMessages, c.Writers)
	case c.BacklogBytes < 0:
		return bad("BacklogBytes", "%d must not be negative", c.BacklogBytes)
	case c.HandoffQueue < 1:
		return bad("HandoffQueue", "%d must be positive", c.HandoffQueue)
	case c.MaxBatch < 1:
		return bad("MaxBatch", "%d must be positive", c.MaxBatch)
	case c.InstanceTTL < time.Second:
		return bad("InstanceTTL", "%v is below 1s (Redis TTLs are whole seconds here)", c.InstanceTTL)
	case c.HeartbeatInterval <= 0 || c.HeartbeatInterval*minAllowedHeartbeatRatio > c.InstanceTTL:
		return bad("HeartbeatInterval", "%v must be positive and at most half of InstanceTTL (%v)", c.HeartbeatInterval, c.InstanceTTL)
	case c.ConnTTL < time.Second:
		return bad("ConnTTL", "%v is below 1s", c.ConnTTL)
	case c.ConnRefresh <= 0 || c.ConnRefresh*minAllowedHeartbeatRatio > c.ConnTTL:
		return bad("ConnRefresh", "%v must be positive and at most half of ConnTTL (%v)", c.ConnRefresh, c.ConnTTL)
	case c.RegistryFlush <= 0:
		return bad("RegistryFlush", "%v must be positive", c.RegistryFlush)
	case c.ProbeTimeout <= 0:
		return bad("ProbeTimeout", "%v must be positive", c.ProbeTimeout)
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return bad("ReconnectMin", "%v must be positive and not above ReconnectMax (%v)", c.ReconnectMin, c.ReconnectMax)
	case c.SendTimeout <= 0:
		return bad("SendTimeout", "%v must be positive", c.SendTimeout)
	case strings.ContainsAny(c.Prefix, " \r\n"):
		return bad("Prefix", "%q contains whitespace", c.Prefix)
	}
	for i, r := range c.History {
		switch {
		case r.Size < 1:
			return bad(fmt.Sprintf("History[%d].Size", i), "%d must be positive", r.Size)
		case r.TTL < time.Millisecond:
			return bad(fmt.Sprintf("History[%d].TTL", i), "%v must be at least 1ms", r.TTL)
		}
	}
	if c.Options == nil {
		if _, err := redis.ParseURL(c.URL); err != nil {
			return bad("URL", "%v", err)
		}
	}
	return nil
}

// redisOptions returns the go-redis options for cfg (defaults applied).
func (cfg Config) redisOptions() (*redis.Options, error) {
	var opt *redis.Options
	if cfg.Options != nil {
		o := *cfg.Options
		opt = &o
	} else {
		var err error
		if opt, err = redis.ParseURL(cfg.URL); err != nil {
			return nil, err
		}
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = -1
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = 1 // the broker has its own backoff
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = defaultDialTimeout
	}
	if opt.ReadTimeout == 0 {
		opt.ReadTimeout = defaultCommandTimeout
	}
	if opt.WriteTimeout == 0 {
		opt.WriteTimeout = defaultCommandTimeout
	}
	// Pub/sub connections dial on their own; writers, the registry and the
	// monitor share the pool.
	if opt.PoolSize == 0 {
		opt.PoolSize = cfg.Writers + 8
	}
	return opt, nil
}

// rule returns the history rule of channel, or nil.
func (cfg *Config) rule(channel string) *HistoryRule {
	var best *HistoryRule
	for i := range cfg.History {
		r := &cfg.History[i]
		if strings.HasPrefix(channel, r.Prefix) && (best == nil || len(r.Prefix) > len(best.Prefix)) {
			best = r
		}
	}
	return best
}
