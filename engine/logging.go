package engine

import (
	"context"
	"fmt"
	"log/slog"
)

// Log lines caused by clients go through a rate-limited logger (ratelog: a
// few lines a second of each message, each line saying how many were
// suppressed since the last), so a flood of bad clients cannot flood the log.

// levelOf is the log level of each kind of client-caused line.
func levelOf(kind string) slog.Level {
	switch kind {
	case "panic":
		return slog.LevelError
	case "max_connections", "slow_consumer", "request_failed":
		return slog.LevelWarn
	case "bad_message":
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// logLimited logs a line caused by a client, rate-limited.
func (e *Engine) logLimited(kind, msg string, args ...any) {
	e.clientLog.Log(context.Background(), levelOf(kind), msg, args...)
}

// ClientLogger returns the engine's rate-limited logger, for lines that
// clients can cause (the HTTP server's refusals use it).
func (e *Engine) ClientLogger() *slog.Logger { return e.clientLog }

// panicked counts and logs a panic recovered in a hook, a callback or a
// connection goroutine (where names it); the caller closes what it concerns.
func (e *Engine) panicked(where string, v any, conn string) {
	e.metrics.countPanic(where)
	e.logLimited("panic", "shardhub: panic recovered", "where", where, "conn", conn, "panic", fmt.Sprint(v))
}
