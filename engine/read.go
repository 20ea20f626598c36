package engine

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/shardhub/shardhub/engine/internal/wsread"
	"github.com/shardhub/shardhub/shard/frame"
)

// The read side of a WebSocket connection.
//
// Bytes from the socket go to the connection's wsread.Parser, which calls
// back (connReader below) for every complete message and control frame. The
// callbacks charge the connection's inbound budget, then run the protocol.
// Whatever decides to close the connection for its input (a protocol
// violation, an oversized or invalid message, the rate limit, a panic in a
// hook) condemns it: one close frame, one metric, one log line (rate-limited
// across connections), and from then on nothing it sends is parsed — its bytes
// are read and discarded until it closes or closeLinger passes, so that a
// client still sending sees the close code rather than a reset.
//
// Two drivers feed the parser. On Linux, TCP connections are polled by the
// engine's reactor (poll.go): a few poller goroutines read every ready socket,
// and a connection's messages run on a goroutine that exists only while it has
// messages waiting (its mailbox), because hooks, the Authorizer and Redis round
// trips may block. Elsewhere, and for connections that are not plain TCP
// (TLS), a goroutine of the connection's own reads it (readLoop) and runs its
// messages itself. Either way one goroutine at a time parses a connection, and
// its messages run one at a time, in order.

// Read states of a connection (inbound.state).
const (
	readOpen     uint32 = iota // parsing
	readDraining               // condemned: discarding input until the peer closes
	readDone                   // the close handshake is over, or the socket failed
)

// inbound is a connection's read-side state. The parser, budget and now are
// owned by the goroutine parsing the connection; state and reason are atomics
// because a message's goroutine may condemn the connection too (a panic).
type inbound struct {
	p      wsread.Parser
	budget budget
	now    int64 // unix nanoseconds at which the bytes being parsed were read
	state  atomic.Uint32
	reason atomic.Uint32 // why the connection ended: an index in endReasons; 0 until known
	async  bool          // messages go to the mailbox (reactor driver); set before reading starts
	// Set by OnFrame when a frame was over budget: the message it belongs to
	// is answered rate_limited instead of run; the control frame is ignored.
	dropMsg, skipCtl bool
}

// endReasons are the labels of shardhub_disconnects_total a reader can give.
var endReasons = [...]string{"", "normal", "peer_error", "too_large", "protocol_error", "invalid_utf8",
	"rate_limited", "panic", "closed", "read_error", "timeout", "on_connect", "shutdown"}

func reasonIndex(reason string) uint32 {
	for i, r := range endReasons {
		if r == reason {
			return uint32(i)
		}
	}
	return 0
}

// connReader is the wsread.Handler of a connection. It is a distinct type so
// that the handler methods stay off Conn's public method set.
type connReader Conn

var _ wsread.Handler = (*connReader)(nil)

// feed parses b, read from the socket at now. It reports whether the
// connection is still open for reading.
func (c *Conn) feed(b []byte, now time.Time) bool {
	c.in.now = now.UnixNano()
	_, err := c.in.p.Feed(b, c.e.cfg.MaxMessageSize, (*connReader)(c))
	if err != nil {
		var we *wsread.Error
		if errors.As(err, &we) {
			c.condemn(we.Code, we.Reason, protocolReason(we.Code))
		} else {
			c.condemn(CloseProtocolError, "protocol error", "protocol_error")
		}
	}
	return c.in.state.Load() == readOpen
}

// protocolReason names a parser failure in metrics.
func protocolReason(code uint16) string {
	switch code {
	case CloseTooBig:
		return "too_large"
	case CloseInvalidPayload:
		return "invalid_utf8"
	}
	return "protocol_error"
}

func (c *Conn) readNow() time.Time { return time.Unix(0, c.in.now) }

// OnFrame charges every frame (data, continuation, control) to the
// connection's budget and counts it as activity.
func (r *connReader) OnFrame(op byte, n int) bool {
	c := (*Conn)(r)
	c.sc.Touch(c.readNow())
	ok := c.charge(n)
	switch {
	case op >= wsread.OpClose:
		c.in.skipCtl = !ok
	case !ok:
		c.in.dropMsg = true // the message this frame starts or continues
	case op != wsread.OpContinuation:
		c.in.dropMsg = false
	}
	return c.in.state.Load() == readOpen
}

// OnMessage runs one complete data message, or hands it to the mailbox.
func (r *connReader) OnMessage(_ byte, payload []byte) bool {
	c := (*Conn)(r)
	if c.in.dropMsg {
		c.in.dropMsg = false
		if c.in.async {
			c.mail(mailRefused, nil, 0) // answered in turn with the messages before it
		} else {
			c.refused()
		}
		return c.in.state.Load() == readOpen
	}
	if c.in.async {
		c.mail(mailMessage, payload, 0)
	} else {
		c.dispatch(payload)
	}
	return c.in.state.Load() == readOpen
}

// OnControl answers pings, notes pongs and completes the close handshake.
func (r *connReader) OnControl(op byte, payload []byte) bool {
	c := (*Conn)(r)
	skip := c.in.skipCtl
	c.in.skipCtl = false
	switch op {
	case wsread.OpPing:
		if !skip {
			// Not waiting: under overload a pong may be dropped, but a poller
			// never stalls its other sockets on one shard's full inbox.
			f := frame.New(len(payload))
			f.AppendBytes(payload)
			f.Seal(frame.OpPong)
			_ = c.sc.TrySend(f)
			f.Release()
		}
	case wsread.OpPong:
	case wsread.OpClose: // honoured over budget too
		code := wsread.CloseCode(payload)
		c.end(closeReason(code))
		c.in.state.CompareAndSwap(readOpen, readDone)
		if c.in.async {
			c.mail(mailClose, nil, code) // after the replies to what came before it
		} else {
			c.peerClosed(code)
		}
	}
	return c.in.state.Load() == readOpen
}

// peerClosed answers the peer's close frame: the peer's code is echoed (RFC
// 6455 §5.5.1) and the connection closes once that is written.
func (c *Conn) peerClosed(code uint16) {
	if c.sc.Closed() {
		return // our close went first: the handshake is complete
	}
	if code == 1005 {
		code = CloseNormal
	}
	c.sc.Close(code, "")
}

// closeReason names a close the peer started.
func closeReason(code uint16) string {
	switch code {
	case CloseNormal, CloseGoingAway, 1005:
		return "normal"
	}
	return "peer_error"
}

// charge takes a frame of n payload bytes from the connection's budget. Over
// budget the frame is refused and counted (its message answered rate_limited,
// a control frame ignored); a connection that stays over it is condemned
// (1008). It reports whether the frame may be handled.
func (c *Conn) charge(n int) bool {
	e := c.e
	if e.cfg.InboundRate <= 0 {
		return true
	}
	switch c.in.budget.take(c.in.now, n, &e.limits) {
	case budgetOK:
		return true
	case budgetRefused:
		e.metrics.countError(CodeRateLimited)
		return false
	default:
		c.condemn(ClosePolicyViolation, "inbound rate limit exceeded", "rate_limited")
		return false
	}
}

// refused answers a data message dropped by the rate limit.
func (c *Conn) refused() {
	c.reply(&Reply{Type: ReplyError, Code: CodeRateLimited, Reason: "inbound rate limit exceeded; message dropped"})
}

// dispatch runs the protocol for one message. A panic in a hook, the
// Authorizer or the codec condemns this connection only (1011).
func (c *Conn) dispatch(payload []byte) {
	defer func() {
		if v := recover(); v != nil {
			c.e.panicked("message", v, c.ID())
			c.condemn(CloseInternalError, "internal error", "panic")
		}
	}()
	c.handle(payload)
}

// condemn closes the connection for what it sent: the close frame goes out
// behind what is queued, the event is counted and logged once, and from now on
// the reader discards the connection's input. Only the first call acts.
func (c *Conn) condemn(code uint16, reason, metric string) {
	if !c.in.state.CompareAndSwap(readOpen, readDraining) {
		return
	}
	c.end(metric)
	if c.in.async {
		// After the replies to what the connection sent before.
		c.mailItem(mailItem{kind: mailCondemn, code: code, reason: reason}, nil)
	} else {
		c.sc.Close(code, reason)
	}
	e := c.e
	if metric != "panic" { // panics are counted in shardhub_panics_total
		e.metrics.countErrorKind(metric)
	}
	e.logLimited("condemned", "shardhub: closing connection for its input",
		"conn", c.ID(), "reason", metric, "code", code, "remote", c.remote())
}

// end records why the connection ends, once.
func (c *Conn) end(reason string) {
	c.in.reason.CompareAndSwap(0, reasonIndex(reason))
}

func (c *Conn) remote() string {
	if c.nc == nil {
		return ""
	}
	return c.nc.RemoteAddr().String()
}

// readLoop reads the connection until it closes, then unregisters it. pending
// holds bytes the client sent right behind its upgrade request. Runs in its own
// goroutine, one per connection read without the reactor.
func (c *Conn) readLoop(pending []byte) {
	e := c.e
	defer e.admitted.Add(-1)
	defer e.readerDone()
	defer c.finish()
	defer func() {
		if v := recover(); v != nil {
			e.panicked("read_loop", v, c.ID())
			c.end("panic")
			c.sc.Close(CloseInternalError, "internal error")
			c.in.state.Store(readDone)
		}
	}()
	open := c.in.state.Load() == readOpen && (len(pending) == 0 || c.feed(pending, time.Now()))
	small := make([]byte, e.cfg.ReadBufferSize)
	buf, big := small, false
	for open {
		n, err := c.nc.Read(buf)
		if n > 0 {
			open = c.feed(buf[:n], time.Now())
		}
		if err != nil {
			c.end(readErrReason(err))
			c.in.state.Store(readDone)
			break
		}
		// A full read means more is waiting: borrow a big buffer while the
		// connection is busy, and give it back once a read leaves it unfilled
		// (so an idle connection holds the small one only).
		switch {
		case !big && n == len(buf):
			buf, big = wsread.GetBuffer(busyReadBuffer)[:busyReadBuffer], true
		case big && n < len(buf):
			wsread.PutBuffer(buf)
			buf, big = small, false
		}
	}
	if big {
		wsread.PutBuffer(buf)
	}
	if c.in.state.Load() == readDraining {
		c.drainInput()
	}
}

// readErrReason names a read that ended without a close handshake.
func readErrReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "read_error"
}

// drainInput discards what a condemned connection still sends, until it
// closes or closeLinger passes. Closing a socket with unread bytes makes the
// kernel send a reset, and a client still sending (a browser in the middle of
// a 70 KB message) would then see 1006 instead of the close code.
func (c *Conn) drainInput() {
	_ = c.nc.SetReadDeadline(time.Now().Add(closeLinger))
	_, _ = io.Copy(io.Discard, c.nc)
}

// busyReadBuffer is the buffer a goroutine-read connection borrows while its
// reads keep filling the small one.
const busyReadBuffer = 64 << 10

// closeLinger bounds how long a condemned connection is drained.
const closeLinger = 2 * time.Second

// finish ends a WebSocket connection once its reader is done: it leaves its
// shard, is counted, and OnDisconnect runs.
func (c *Conn) finish() {
	e := c.e
	c.in.p.Release()
	c.home().Unregister(&c.sc)
	reason := endReasons[c.in.reason.Load()]
	if cause := c.sc.Cause(); cause != "" && (reason == "closed" || reason == "read_error" || reason == "") {
		reason = cause // the server closed it first: evicted, timed out, shutting down
	}
	if reason == "" {
		reason = "closed"
	}
	e.metrics.countDisconnect(reason)
	if h := e.cfg.Hooks.OnDisconnect; h != nil {
		var err error
		if reason != "normal" && reason != "closed" && reason != "shutdown" {
			err = &DisconnectError{Reason: reason}
		}
		func() {
			defer func() {
				if v := recover(); v != nil {
					e.panicked("on_disconnect", v, c.ID())
				}
			}()
			h(c, err)
		}()
	}
}

// DisconnectError is what Hooks.OnDisconnect receives when a connection ended
// abnormally. Reason is the label of shardhub_disconnects_total
// (docs/security.md lists them).
type DisconnectError struct {
	Reason string
}

func (e *DisconnectError) Error() string { return "shardhub: connection ended: " + e.Reason }
