package shard

// Attacks on the shard's defaults. A TestAttack test that fails names a
// weakness still open.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// attackLog collects log output and counts lines containing a string.
type attackLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *attackLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *attackLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// resetter fails every write, like a client that reset its connection.
type resetter struct{}

var errReset = errors.New("connection reset by peer")

func (resetter) TryWrite([][]byte) (int, error)         { return 0, errReset }
func (resetter) Write([][]byte, time.Time) (int, error) { return 0, errReset }
func (resetter) Close() error                           { return nil }

// TestAttackEvictionAndWriteFailureLogsAreRateLimited: each slow consumer
// evicted logs a Warn line and each failed write an Info line, per
// connection and without a limit. Clients cause both (stop reading; reset
// the socket), so a crowd of them writes a line each: 300 connections that
// never read, against `shardhub serve`, wrote 300 "slow consumer evicted"
// lines. Log lines caused by clients must be rate-limited (the counters
// still count every one).
func TestAttackEvictionAndWriteFailureLogsAreRateLimited(t *testing.T) {
	t.Parallel()
	var logs attackLog
	s := startShard(t, Config{
		Limits: Limits{MaxMessages: 2, MaxBytes: 1 << 20},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	const n = 200
	start := time.Now()
	for i := range n {
		if err := s.Register(NewConn(fmt.Sprintf("slow%d", i), newBlocker())); err != nil {
			t.Fatal(err)
		}
		if err := s.Register(NewConn(fmt.Sprintf("reset%d", i), resetter{})); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		s.Broadcast(textFrame(fmt.Sprintf("m%d", i)))
	}
	waitFor(t, "every connection evicted or failed", func() bool {
		c := s.Counters()
		return c.Forced == n && c.WriteErrors == n && c.Conns == 0
	})
	// Generous: a burst of 50 and 10 lines a second, for each kind.
	allowed := 50 + int(math.Ceil(10*time.Since(start).Seconds()))
	for _, line := range []string{"slow consumer evicted", "write failed"} {
		if got := logs.count(line); got > allowed {
			t.Errorf("%d %q log lines for %d connections in %v; at most %d allowed",
				got, line, n, time.Since(start).Round(time.Millisecond), allowed)
		}
	}
}
