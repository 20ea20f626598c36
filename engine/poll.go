package engine

import (
	"errors"
	"time"

	"github.com/shardhub/shardhub/engine/internal/reactor"
)

// connPoll is a connection's reactor.Handler: the poller's view of a Conn
// (read.go says how the two drivers share the read side).
type connPoll Conn

var _ reactor.Handler = (*connPoll)(nil)

// OnData parses what the poller read.
func (h *connPoll) OnData(b []byte) reactor.Action {
	c := (*Conn)(h)
	if c.in.state.Load() == readOpen {
		c.feed(b, time.Now())
	}
	switch c.in.state.Load() {
	case readOpen:
		return reactor.Continue
	case readDraining:
		return reactor.Drain
	}
	return reactor.Stop
}

// DrainUntil bounds the drain of a condemned connection.
func (h *connPoll) DrainUntil() time.Time { return time.Now().Add(closeLinger) }

// OnEnd hands the end of the connection to its mailbox, after its messages.
func (h *connPoll) OnEnd(err error) {
	c := (*Conn)(h)
	switch {
	case err == nil:
		c.end("closed")
	case errors.Is(err, reactor.ErrClosed):
		c.end("shutdown")
	default:
		c.end(readErrReason(err))
	}
	c.in.state.Store(readDone)
	c.mail(mailFinish, nil, 0)
}
