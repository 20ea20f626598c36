package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/shardhub/shardhub/engine/redisbroker"
)

// clusterFlags are the `shardhub serve` settings for running several instances
// as one: the Redis broker, channel history, and SO_REUSEPORT.
type clusterFlags struct {
	redisURL, prefix string
	historyPrefixes  string
	historySize      int
	historyTTL       time.Duration
	pubsubConns      int
	backlogMessages  int
	backlogBytes     int64
	peerWait         time.Duration
	reusePort        bool
}

func (c *clusterFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&c.redisURL, "redis", "", "Redis URL (redis://host:port/db): instances sharing it behave as one cluster; empty = single node")
	fs.StringVar(&c.prefix, "redis-prefix", redisbroker.DefaultPrefix, "prefix of every Redis key and channel (clusters sharing a Redis need different ones)")
	fs.IntVar(&c.pubsubConns, "redis-pubsub-conns", redisbroker.DefaultPubSubConns, "Redis connections the channel subscriptions are multiplexed over")
	fs.IntVar(&c.backlogMessages, "redis-backlog-messages", redisbroker.DefaultBacklogMessages,
		"messages kept for the other instances while Redis does not answer, flushed in order when it does; past it they are dropped and counted (-1 = no backlog: fail at once)")
	fs.Int64Var(&c.backlogBytes, "redis-backlog-bytes", redisbroker.DefaultBacklogBytes, "data bytes the backlog may hold")
	fs.DurationVar(&c.peerWait, "redis-peer-wait", redisbroker.DefaultPeerWait,
		"after an outage, how long the backlog waits for the other instances to be subscribed again (negative = no wait)")
	fs.StringVar(&c.historyPrefixes, "history-prefix", "", "comma-separated channel prefixes that keep history for recovery (\"\" = none; needs --redis)")
	fs.IntVar(&c.historySize, "history-size", redisbroker.DefaultHistorySize, "publications kept per history channel (stream MAXLEN)")
	fs.DurationVar(&c.historyTTL, "history-ttl", redisbroker.DefaultHistoryTTL, "a history channel's stream expires this long after its last publication")
	fs.BoolVar(&c.reusePort, "reuseport", false, "listen with SO_REUSEPORT so several instances share one port (the kernel spreads connections)")
}

// broker returns the Redis broker, or nil for a single node.
func (c *clusterFlags) broker(log *slog.Logger) (*redisbroker.Broker, error) {
	if c.redisURL == "" {
		if c.historyPrefixes != "" {
			return nil, fmt.Errorf("--history-prefix needs --redis (history lives in Redis streams)")
		}
		return nil, nil
	}
	cfg := redisbroker.Config{URL: c.redisURL, Prefix: c.prefix, PubSubConns: c.pubsubConns, Logger: log,
		BacklogMessages: c.backlogMessages, BacklogBytes: c.backlogBytes, PeerWait: c.peerWait}
	if c.historyPrefixes != "" {
		for _, p := range strings.Split(c.historyPrefixes, ",") {
			cfg.History = append(cfg.History, redisbroker.HistoryRule{Prefix: strings.TrimSpace(p), Size: c.historySize, TTL: c.historyTTL})
		}
	}
	// go-redis logs every failed dial itself; the broker already says what
	// matters (outage, reconnects) once, in structured form.
	redis.SetLogger(quietRedisLogger{log})
	return redisbroker.New(cfg)
}

// listen opens the listening socket, with SO_REUSEPORT when asked.
func (c *clusterFlags) listen(addr string) (net.Listener, error) {
	if !c.reusePort {
		return net.Listen("tcp", addr)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

// quietRedisLogger sends go-redis's internal log lines to slog at debug level.
type quietRedisLogger struct{ log *slog.Logger }

func (q quietRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	q.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
