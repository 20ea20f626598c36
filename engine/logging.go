package engine

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Log lines caused by clients are rate-limited per kind, across connections:
// a flood of bad clients costs a few lines a second, each saying how many
// were suppressed since the last one.
const (
	logLinesPerSecond = 5
	logBurst          = 20
)

// logLimiter is a token bucket of log lines for each kind of event.
type logLimiter struct {
	mu    sync.Mutex          // guards kinds.
	kinds map[string]*logKind // by kind
}

type logKind struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// allow takes a line of kind; it returns the lines suppressed since the last
// allowed one, or ok=false.
func (l *logLimiter) allow(kind string, now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kinds == nil {
		l.kinds = make(map[string]*logKind)
	}
	k := l.kinds[kind]
	if k == nil {
		k = &logKind{tokens: logBurst, last: now}
		l.kinds[kind] = k
	}
	k.tokens = min(k.tokens+now.Sub(k.last).Seconds()*logLinesPerSecond, logBurst)
	k.last = now
	if k.tokens < 1 {
		k.suppressed++
		return 0, false
	}
	k.tokens--
	s := k.suppressed
	k.suppressed = 0
	return s, true
}

// levelOf is the log level of each kind of rate-limited line.
func levelOf(kind string) slog.Level {
	switch kind {
	case "panic":
		return slog.LevelError
	case "max_connections", "slow_consumer":
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// logLimited logs a line caused by a client, rate-limited by kind.
func (e *Engine) logLimited(kind, msg string, args ...any) {
	lv := levelOf(kind)
	if !e.cfg.Logger.Enabled(context.Background(), lv) {
		return
	}
	suppressed, ok := e.logs.allow(kind, time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	e.cfg.Logger.Log(context.Background(), lv, msg, args...)
}

// panicked counts and logs a panic recovered in a hook, a callback or a
// connection goroutine (where names it); the caller closes what it concerns.
func (e *Engine) panicked(where string, v any, conn string) {
	e.metrics.countPanic(where)
	e.logLimited("panic", "shardhub: panic recovered", "where", where, "conn", conn, "panic", fmt.Sprint(v))
}
