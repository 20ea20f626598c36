// Package ratelog is a slog.Handler that lets through a few lines a second of
// each message: the log lines a client can cause (a refused request, an
// evicted connection) must not let one client flood the log. Each line that
// follows suppressed ones says how many with a "suppressed" attribute.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults of New.
const (
	PerSecond = 5
	Burst     = 20
)

// Handler rate-limits records by message text, then passes them on.
type Handler struct {
	next slog.Handler
	l    *limiter // shared by the handlers WithAttrs/WithGroup derive
}

type limiter struct {
	mu    sync.Mutex       // guards kinds.
	kinds map[string]*kind // by message
}

type kind struct {
	tokens     float64
	last       time.Time
	suppressed int
}

// New wraps next: each distinct message gets PerSecond lines a second, in
// bursts of up to Burst.
func New(next slog.Handler) *Handler {
	return &Handler{next: next, l: &limiter{kinds: make(map[string]*kind)}}
}

// Logger returns a slog.Logger writing through a new Handler over l's.
func Logger(l *slog.Logger) *slog.Logger { return slog.New(New(l.Handler())) }

// Enabled reports whether the wrapped handler takes records of this level.
func (h *Handler) Enabled(ctx context.Context, lv slog.Level) bool { return h.next.Enabled(ctx, lv) }

// Handle passes r on unless its message is over its rate.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	suppressed, ok := h.l.allow(r.Message, r.Time)
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a handler sharing this one's limits.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), l: h.l}
}

// WithGroup returns a handler sharing this one's limits.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), l: h.l}
}

// allow takes a line of message msg at now; it returns the lines suppressed
// since the last allowed one.
func (l *limiter) allow(msg string, now time.Time) (suppressed int, ok bool) {
	if now.IsZero() {
		now = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.kinds[msg]
	if k == nil {
		if len(l.kinds) > 10000 {
			clear(l.kinds) // messages are constants; this only bounds a misuse
		}
		k = &kind{tokens: Burst, last: now}
		l.kinds[msg] = k
	}
	k.tokens = min(k.tokens+now.Sub(k.last).Seconds()*PerSecond, Burst)
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
