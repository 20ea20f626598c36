package engine

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/shardhub/shardhub/shard"
)

// Defaults applied by Config for zero fields.
const (
	DefaultShardsPerProc      = 1
	DefaultBroadcastQueue     = 256
	DefaultClientPublishQueue = 128
	DefaultShardInbox         = shard.DefaultInboxSize
	DefaultConnQueueMessages  = shard.DefaultMaxMessages
	DefaultConnQueueBytes     = shard.DefaultMaxBytes
	DefaultMaxMessageSize     = 64 << 10
	DefaultReadBufferSize     = 256
	DefaultMaxSubscriptions   = shard.DefaultMaxSubscriptions
	DefaultPingInterval       = 54 * time.Second
	DefaultPongWait           = 60 * time.Second
	DefaultWriteTimeout       = shard.DefaultWriteTimeout
	DefaultHandshakeTimeout   = 5 * time.Second
	DefaultShutdownGrace      = shard.DefaultShutdownGrace
	DefaultInboundRate        = 100
	DefaultInboundBurst       = 200
	DefaultInboundByteRate    = 1 << 20
	DefaultMaxChannelLength   = 255
	DefaultMaxChannels        = 1 << 20
	maxAllowedMessageSize     = 16 << 20
	maxAllowedShards          = 4096
	minAllowedReadBufferSize  = 128
	maxAllowedReadBufferSize  = 1 << 20
	maxAllowedConnQueueFrames = 1 << 20
)

// Config configures an Engine. The zero value is a working single-node engine:
// every zero field means the default its comment names. Call Validate (New does)
// to check it.
type Config struct {
	// Shards is the number of hub shards, each an actor goroutine owning the
	// connections hashed to it. Zero means GOMAXPROCS: one shard per core writes
	// the largest batches per wake-up (more shards cost CPU per delivery on real
	// sockets; docs/benchmarks.md).
	Shards int
	// BroadcastQueue is the capacity of the queue between Broadcast/Publish and
	// the fan-out coordinator. When it is full the message is dropped and counted;
	// producers never block. Zero means 256.
	BroadcastQueue int
	// ClientPublishQueue is the capacity of the queue of publications from
	// clients, served only when the broadcast queue is empty: clients can fill
	// their share but never the backend's. Full means the client's message is
	// dropped (counted) and answered "overloaded". Zero means 128.
	ClientPublishQueue int
	// ShardInbox is the capacity of each shard's command inbox. Zero means 1024.
	ShardInbox int
	// ConnQueueMessages is the most frames that may wait for one slow connection;
	// one more evicts it (close 1013). Zero means 1024.
	ConnQueueMessages int
	// ConnQueueBytes is the most bytes that may wait for one connection; more
	// evicts it. Zero means 4 MiB.
	ConnQueueBytes int
	// MaxMessageSize is the largest inbound message, and the largest payload that
	// Broadcast, Publish and Send accept. A larger inbound message closes the
	// connection with 1009. Zero means 64 KiB.
	MaxMessageSize int
	// ReadBufferSize is the read buffer of a connection read by a goroutine of
	// its own (TLS, systems without epoll, ReadPollers < 0): small keeps an
	// idle connection cheap; while reads keep filling it, a 64 KiB buffer is
	// borrowed from a pool instead. Connections read by the reactor use its
	// pollers' buffers and hold none. Zero means 256.
	ReadBufferSize int
	// ReadPollers is the number of goroutines that read every TCP connection
	// through epoll on Linux (an idle connection then has no goroutine and no
	// read buffer). Zero means GOMAXPROCS; negative gives every connection a
	// goroutine of its own, as on other systems and for TLS connections.
	ReadPollers int
	// MaxConnections caps the WebSocket connections the engine holds: past it
	// an upgrade gets 503 Service Unavailable with Retry-After, counted as
	// shardhub_upgrade_failures_total{reason="max_connections"}. Set it below the
	// process's open-files limit so the HTTP API, metrics and the broker still
	// get file descriptors when clients would take them all. Zero means no
	// limit; `shardhub serve` derives one from RLIMIT_NOFILE.
	MaxConnections int
	// MaxSubscriptions is the most channels one connection may subscribe to.
	// Zero means 1024.
	MaxSubscriptions int
	// MaxChannelLength is the longest channel name. Zero means 255.
	MaxChannelLength int
	// MaxChannels caps the channels with subscribers on this instance: a
	// client subscription that would create one more is refused
	// (too_many_channels). Server-side Conn.Subscribe is not capped. Each
	// channel costs about its name plus 200 bytes, so the default bounds what
	// clients can make the server hold in channels to a few hundred MB. Zero
	// means 1,048,576.
	MaxChannels int
	// PingInterval is how often every connection is pinged. Zero means 54s;
	// negative disables pings (and the idle timeout: no connection is closed for
	// its silence).
	PingInterval time.Duration
	// PongWait is how long a connection may stay silent (no frame at all: no
	// message, no pong) before it is closed with 1001 "ping timeout". It must
	// exceed PingInterval. Zero means 60s.
	PongWait time.Duration
	// WriteTimeout bounds each blocking write to a slow connection. Zero means 10s.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds writing the upgrade response. Zero means 5s.
	HandshakeTimeout time.Duration
	// ShutdownGrace is how long Shutdown waits for connections to leave after
	// sending them close 1001. Zero means 500ms.
	ShutdownGrace time.Duration
	// InboundRate is each connection's sustained limit on inbound messages per
	// second; InboundBurst is the burst above it. Messages past the limit are
	// answered with a rate_limited error, and a connection that keeps going is
	// closed with 1008. Zero means 100/s with a burst of 200; negative disables.
	InboundRate  float64
	InboundBurst int
	// InboundByteRate is each connection's sustained limit on inbound payload
	// bytes per second (the burst is twice that, and at least MaxMessageSize).
	// Frames past it are refused like frames past InboundRate. Zero means
	// 1 MiB/s; negative disables it. Both limits count data and control frames
	// alike and are disabled together by a negative InboundRate.
	InboundByteRate int

	// CheckOrigin decides whether a browser upgrade from r may proceed (403
	// otherwise). Nil accepts requests without an Origin header and those whose
	// Origin host equals the request Host, or is listed in AllowedOrigins.
	CheckOrigin func(r *http.Request) bool
	// AllowedOrigins lists extra origins (scheme://host[:port]) accepted by the
	// default CheckOrigin; "*" accepts any.
	AllowedOrigins []string
	// Authenticate identifies the client of an upgrade request; an error answers
	// 401 and no connection is made. The returned user id is available to the
	// Authorizer and hooks. Nil accepts everyone anonymously.
	Authenticate func(r *http.Request) (userID string, err error)
	// Authorizer decides each subscribe, publish and send. Nil allows
	// subscribe and publish (except publishing to a system channel, see
	// IsSystemChannel) and refuses client-to-client send unless
	// AllowClientSend is set.
	Authorizer Authorizer
	// AllowClientSend lets clients send private messages to other connections
	// by id when there is no Authorizer (an Authorizer decides for itself).
	// Off by default: the engine does not know which clients may talk to which.
	AllowClientSend bool
	// Hooks are called on connection events. Nil fields are skipped.
	Hooks Hooks

	// Broker links engines into a cluster. Nil means an in-process broker: a
	// single node, nothing to install.
	Broker Broker
	// Codec is the wire protocol. Nil means JSONCodec (docs/protocol.md).
	Codec Codec
	// Logger receives structured logs. Nil means slog.Default().
	Logger *slog.Logger
	// Metrics receives the engine's metrics. Nil means a new set owned by the
	// engine, so engines in one process never collide.
	Metrics *metrics.Set
	// InstanceID names this engine in a cluster and prefixes connection ids.
	// Zero means a random id.
	InstanceID string
}

// Authorizer decides whether req may proceed; a non-nil error denies it and is
// sent to the client as a forbidden error with the error's text as reason.
// It is called on the goroutine that runs the connection's messages, one at a
// time, and may block that connection only.
type Authorizer func(ctx context.Context, req AuthRequest) error

// Action is what an AuthRequest asks to do.
type Action uint8

// Actions checked by the Authorizer.
const (
	ActionSubscribe Action = iota + 1
	ActionPublish
	ActionSend
)

// String returns the action's protocol name.
func (a Action) String() string {
	switch a {
	case ActionSubscribe:
		return "subscribe"
	case ActionPublish:
		return "publish"
	case ActionSend:
		return "send"
	}
	return "unknown"
}

// AuthRequest is what the Authorizer sees.
type AuthRequest struct {
	Action  Action
	Conn    *Conn  // the client asking
	Channel string // subscribe, publish
	// Target is the resolved recipient of a send: the policy sees the connection
	// the message would really reach, not just the id the client wrote.
	Target *Target
}

// Target is the resolved recipient of a private message.
type Target struct {
	ID       string
	UserID   string // empty when the target is on another instance
	Instance string // the instance holding the connection
	Local    bool   // the connection is on this instance
}

// Hooks are optional callbacks on connection events. They run on the connection's
// own goroutines and may block that connection only.
type Hooks struct {
	// OnConnect runs after the connection is registered and before its welcome.
	// An error closes it with 1008 and the error's text.
	OnConnect func(c *Conn) error
	// OnMessage sees every inbound data message before the codec. Returning true
	// means the hook handled it and the engine does nothing more.
	OnMessage func(c *Conn, msg []byte) (handled bool)
	// OnDisconnect runs once the connection has left its shard; err says why
	// (nil for a normal close).
	OnDisconnect func(c *Conn, err error)
}

// withDefaults returns a copy of cfg with zero fields replaced by defaults.
func (cfg Config) withDefaults() Config {
	if cfg.Shards == 0 {
		cfg.Shards = DefaultShardsPerProc * runtime.GOMAXPROCS(0)
	}
	if cfg.BroadcastQueue == 0 {
		cfg.BroadcastQueue = DefaultBroadcastQueue
	}
	if cfg.ClientPublishQueue == 0 {
		cfg.ClientPublishQueue = DefaultClientPublishQueue
	}
	if cfg.ShardInbox == 0 {
		cfg.ShardInbox = DefaultShardInbox
	}
	if cfg.ConnQueueMessages == 0 {
		cfg.ConnQueueMessages = DefaultConnQueueMessages
	}
	if cfg.ConnQueueBytes == 0 {
		cfg.ConnQueueBytes = DefaultConnQueueBytes
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.ReadBufferSize == 0 {
		cfg.ReadBufferSize = DefaultReadBufferSize
	}
	if cfg.MaxSubscriptions == 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.MaxChannels == 0 {
		cfg.MaxChannels = DefaultMaxChannels
	}
	if cfg.MaxChannelLength == 0 {
		cfg.MaxChannelLength = DefaultMaxChannelLength
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PongWait == 0 {
		cfg.PongWait = DefaultPongWait
		if cfg.PingInterval > 0 && cfg.PongWait <= cfg.PingInterval {
			cfg.PongWait = cfg.PingInterval * 10 / 9
		}
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.InboundRate == 0 {
		cfg.InboundRate = DefaultInboundRate
	}
	if cfg.InboundBurst == 0 {
		cfg.InboundBurst = DefaultInboundBurst
	}
	if cfg.InboundByteRate == 0 {
		cfg.InboundByteRate = DefaultInboundByteRate
	}
	if cfg.Codec == nil {
		cfg.Codec = JSONCodec{}
	}
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
	case c.Shards < 1 || c.Shards > maxAllowedShards:
		return bad("Shards", "%d is outside 1..%d", c.Shards, maxAllowedShards)
	case c.BroadcastQueue < 1:
		return bad("BroadcastQueue", "%d must be positive", c.BroadcastQueue)
	case c.ClientPublishQueue < 1:
		return bad("ClientPublishQueue", "%d must be positive", c.ClientPublishQueue)
	case c.ShardInbox < 1:
		return bad("ShardInbox", "%d must be positive", c.ShardInbox)
	case c.ConnQueueMessages < 1 || c.ConnQueueMessages > maxAllowedConnQueueFrames:
		return bad("ConnQueueMessages", "%d is outside 1..%d", c.ConnQueueMessages, maxAllowedConnQueueFrames)
	case c.MaxMessageSize < 1 || c.MaxMessageSize > maxAllowedMessageSize:
		return bad("MaxMessageSize", "%d is outside 1..%d", c.MaxMessageSize, maxAllowedMessageSize)
	case c.ConnQueueBytes > shard.MaxQueueBytes:
		return bad("ConnQueueBytes", "%d is above the %d limit", c.ConnQueueBytes, shard.MaxQueueBytes)
	case c.ConnQueueBytes < c.MaxMessageSize:
		return bad("ConnQueueBytes", "%d is below MaxMessageSize (%d): one message could never fit", c.ConnQueueBytes, c.MaxMessageSize)
	case c.ReadBufferSize < minAllowedReadBufferSize || c.ReadBufferSize > maxAllowedReadBufferSize:
		return bad("ReadBufferSize", "%d is outside %d..%d", c.ReadBufferSize, minAllowedReadBufferSize, maxAllowedReadBufferSize)
	case c.MaxConnections < 0:
		return bad("MaxConnections", "%d is negative (0 means no limit)", c.MaxConnections)
	case c.MaxSubscriptions < 1:
		return bad("MaxSubscriptions", "%d must be positive", c.MaxSubscriptions)
	case c.MaxChannels < 1:
		return bad("MaxChannels", "%d must be positive", c.MaxChannels)
	case c.MaxChannelLength < 1:
		return bad("MaxChannelLength", "%d must be positive", c.MaxChannelLength)
	case c.PingInterval > 0 && c.PongWait <= c.PingInterval:
		return bad("PongWait", "%v must exceed PingInterval (%v), or every connection would time out", c.PongWait, c.PingInterval)
	case c.PongWait < 0:
		return bad("PongWait", "%v must not be negative", c.PongWait)
	case c.WriteTimeout < 0:
		return bad("WriteTimeout", "%v must not be negative", c.WriteTimeout)
	case c.HandshakeTimeout < 0:
		return bad("HandshakeTimeout", "%v must not be negative", c.HandshakeTimeout)
	case c.ShutdownGrace < 0:
		return bad("ShutdownGrace", "%v must not be negative", c.ShutdownGrace)
	case c.InboundRate > 0 && c.InboundBurst < 1:
		return bad("InboundBurst", "%d must be positive when InboundRate is set", c.InboundBurst)
	}
	for _, o := range c.AllowedOrigins {
		if o == "" {
			return bad("AllowedOrigins", "empty entry")
		}
	}
	return nil
}
