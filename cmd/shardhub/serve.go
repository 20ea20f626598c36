package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

func init() { register("serve", "run the WebSocket server", runServe) }

// serveFlags holds `shardhub serve` settings; every flag can also come from
// SHARDHUB_<FLAG_NAME>.
type serveFlags struct {
	addr, token, apiToken, statsToken, origins, logLevel, logFormat string
	pprof, apiRemote                                                bool
	maxHTTPConns                                                    int
	cfg                                                             engine.Config
	drain                                                           time.Duration
	cluster                                                         clusterFlags
}

func (f *serveFlags) define(fs *flag.FlagSet) {
	d := engine.Config{}
	fs.StringVar(&f.addr, "addr", ":8080", "listen address")
	fs.IntVar(&f.cfg.Shards, "shards", d.Shards, "hub shards (0 = GOMAXPROCS)")
	fs.IntVar(&f.cfg.BroadcastQueue, "broadcast-queue", engine.DefaultBroadcastQueue, "broadcast queue capacity; full = drop and count")
	fs.IntVar(&f.cfg.ShardInbox, "shard-inbox", engine.DefaultShardInbox, "per-shard delivery inbox capacity")
	fs.IntVar(&f.cfg.ConnQueueMessages, "conn-queue-messages", engine.DefaultConnQueueMessages, "frames that may wait for one connection before it is evicted")
	fs.IntVar(&f.cfg.ConnQueueBytes, "conn-queue-bytes", engine.DefaultConnQueueBytes, "bytes that may wait for one connection before it is evicted")
	fs.IntVar(&f.cfg.MaxMessageSize, "max-message-size", engine.DefaultMaxMessageSize, "largest inbound message and published payload in bytes (bigger inbound → close 1009)")
	fs.IntVar(&f.cfg.ReadBufferSize, "read-buffer", engine.DefaultReadBufferSize, "per-connection read buffer in bytes")
	fs.IntVar(&f.cfg.MaxConnections, "max-conns", -1, "WebSocket connections held at most; more get 503 (-1 = the open-files limit less 512 kept for the API, metrics and Redis; 0 = no limit)")
	fs.IntVar(&f.cfg.MaxSubscriptions, "max-subscriptions", engine.DefaultMaxSubscriptions, "channels one connection may subscribe to")
	fs.IntVar(&f.cfg.MaxChannels, "max-channels", engine.DefaultMaxChannels, "channels with subscribers on this instance; a client subscription past it is refused")
	fs.DurationVar(&f.cfg.PingInterval, "ping-interval", engine.DefaultPingInterval, "ping period (negative disables pings and read deadlines)")
	fs.DurationVar(&f.cfg.PongWait, "pong-wait", engine.DefaultPongWait, "close a connection silent for this long")
	fs.DurationVar(&f.cfg.WriteTimeout, "write-timeout", engine.DefaultWriteTimeout, "bound on one blocking write to a slow connection")
	fs.DurationVar(&f.cfg.ShutdownGrace, "shutdown-grace", engine.DefaultShutdownGrace, "how long shutdown waits for connections to leave after close 1001")
	fs.Float64Var(&f.cfg.InboundRate, "inbound-rate", engine.DefaultInboundRate, "inbound messages per second per connection (negative disables)")
	fs.IntVar(&f.cfg.InboundBurst, "inbound-burst", engine.DefaultInboundBurst, "inbound burst per connection")
	fs.IntVar(&f.cfg.InboundByteRate, "inbound-byte-rate", engine.DefaultInboundByteRate, "inbound payload bytes per second per connection (negative disables)")
	fs.IntVar(&f.cfg.ClientPublishQueue, "client-publish-queue", engine.DefaultClientPublishQueue, "queue of client publications, served after the broadcast queue; full = drop and count")
	fs.BoolVar(&f.cfg.AllowClientSend, "allow-client-send", false, "let clients send private messages to other connections by id (off: refused with forbidden)")
	fs.StringVar(&f.origins, "allowed-origins", "", "comma-separated extra browser origins allowed to connect (\"*\" = any); same-origin is always allowed")
	fs.StringVar(&f.token, "token", "", "when set, clients must present it to connect (?token= or Authorization: Bearer)")
	fs.StringVar(&f.apiToken, "api-token", "", "when set, /api/broadcast, /api/publish and /api/send require Authorization: Bearer <token>; unset, they answer loopback clients only")
	fs.BoolVar(&f.apiRemote, "api-allow-remote", false, "without --api-token, answer the publish API from any address, not only loopback (still JSON only, never cross-site)")
	fs.StringVar(&f.statsToken, "stats-token", "", "when set, /metrics, /api/stats and /api/cluster require Authorization: Bearer <token>")
	fs.IntVar(&f.maxHTTPConns, "max-http-conns", server.DefaultMaxHTTPConns, "non-WebSocket HTTP connections held at once; past it idle and slow ones are closed first, then 503")
	fs.StringVar(&f.cfg.InstanceID, "instance-id", "", "instance id in a cluster (default random)")
	fs.BoolVar(&f.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&f.drain, "shutdown-timeout", 10*time.Second, "how long SIGINT/SIGTERM waits for a graceful shutdown")
	f.cluster.define(fs)
}

// serveConfigError names the flags behind an engine.Config validation error.
func serveConfigError(fs *flag.FlagSet, f *serveFlags, err error) error {
	return configError(err, engine.ErrInvalidConfig, fs, &f.cfg, map[string]string{"AllowedOrigins": "allowed-origins"})
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
}

const serveUsage = `usage: shardhub serve [flags]

Every flag can also be set with SHARDHUB_<FLAG> (e.g. SHARDHUB_ADDR=:9000).
Exit codes: 0 stopped cleanly, 1 failed, 2 bad usage.`

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	var f serveFlags
	f.define(fs)
	if _, code, done := parseFlags(fs, args, serveUsage, stdout, false); done {
		return code
	}
	if err := applyEnv(fs, "SHARDHUB_"); err != nil {
		fmt.Fprintln(stderr, "shardhub serve:", err)
		return 2
	}
	log, err := newLogger(f.logLevel, f.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "shardhub serve:", err)
		return 2
	}
	cfg := f.cfg
	cfg.Logger = log
	if os.Getenv("GOGC") == "" {
		// Idle connections are long-lived and small; what each upgrade leaves
		// behind (net/http's request state and the buffers hijacking hands
		// over, ~8 KB) is garbage until the next collection. Collecting at half
		// the live heap instead of all of it keeps the process near its live
		// size: 2.2 KB of RSS per idle connection at 19,000 instead of 2.7 KB,
		// for no measurable CPU (docs/tuning.md). GOGC in the environment wins.
		debug.SetGCPercent(50)
	}
	if f.origins != "" {
		for _, o := range strings.Split(f.origins, ",") {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, strings.TrimSpace(o))
		}
	}
	if f.token != "" {
		cfg.Authenticate = server.TokenAuth(f.token)
	}
	if cfg.MaxConnections == -1 {
		cfg.MaxConnections = autoMaxConns()
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "shardhub serve:", serveConfigError(fs, &f, err))
		return 2
	}
	rb, err := f.cluster.broker(log) // nil without --redis: single node
	if err != nil {
		fmt.Fprintln(stderr, "shardhub serve:", err)
		return 2
	}
	opts := server.Options{APIToken: f.apiToken, AllowRemoteAPI: f.apiRemote, StatsToken: f.statsToken, Pprof: f.pprof, Logger: log}
	if rb != nil {
		cfg.Broker = rb
		opts.Health, opts.Cluster = rb.Health, rb.Cluster
	}
	ln, err := f.cluster.listen(f.addr)
	if err != nil {
		fmt.Fprintln(stderr, "shardhub serve:", err)
		return 1
	}
	e, err := engine.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "shardhub serve:", serveConfigError(fs, &f, err))
		return 1
	}
	refused := e.Metrics().NewCounter(`shardhub_http_refused_total`)
	srv := server.NewHTTPServer(server.Handler(e, opts), server.HTTPConfig{
		MaxConns: f.maxHTTPConns, Logger: log, OnRefuse: refused.Inc,
	})
	log.Info("shardhub: serving", "addr", ln.Addr().String(), "shards", e.NumShards(), "instance", e.InstanceID(),
		"max_conns", cfg.MaxConnections, "ws", "ws://"+displayAddr(ln.Addr())+"/ws", "version", version())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		log.Error("shardhub: server stopped", "err", err)
		return 1
	case <-ctx.Done():
	}
	stop()
	log.Info("shardhub: shutting down", "connections", e.Connections())
	sctx, cancel := context.WithTimeout(context.Background(), f.drain)
	defer cancel()
	_ = srv.Shutdown(sctx) // stops accepting; hijacked WebSocket conns are the engine's
	if err := e.Shutdown(sctx); err != nil {
		log.Error("shardhub: shutdown incomplete", "err", err)
		return 1
	}
	log.Info("shardhub: stopped")
	return 0
}

func displayAddr(a net.Addr) string {
	s := a.String()
	if strings.HasPrefix(s, "[::]:") {
		return "localhost:" + strings.TrimPrefix(s, "[::]:")
	}
	if strings.HasPrefix(s, "0.0.0.0:") {
		return "localhost:" + strings.TrimPrefix(s, "0.0.0.0:")
	}
	return s
}

// fdHeadroom is the file descriptors the automatic --max-conns keeps for
// everything that is not a WebSocket: the listener, API and metrics requests,
// Redis connections, handshakes being refused, log files.
const fdHeadroom = 512

// autoMaxConns is the connection limit that keeps fdHeadroom descriptors free
// under RLIMIT_NOFILE (Go raises the soft limit to the hard one at start-up), or
// 0 (no limit) where the limit cannot be read or is effectively unlimited.
func autoMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 0
	}
	return max(int(rl.Cur)-fdHeadroom, 64)
}
