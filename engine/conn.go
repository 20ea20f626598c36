package engine

import (
	"context"
	"errors"
	"net"

	"github.com/shardhub/shardhub/shard"
	"github.com/shardhub/shardhub/shard/frame"
	"github.com/shardhub/shardhub/shard/transport"
)

// Conn is one client connection. Its methods are safe for concurrent use.
//
// A WebSocket Conn is read by the engine's reactor, or, where the reactor cannot
// read it (TLS, no epoll), by a goroutine of its own; its messages, with the
// hooks and the Authorizer, run one at a time on one goroutine (read.go). Writes
// are made by the shard (or a short-lived drain goroutine while the socket is
// backed up).
type Conn struct {
	sc   shard.Conn // write side; registered with shard
	e    *Engine
	nc   net.Conn // the socket; nil for an attached connection
	user string
	in   inbound // read side, owned by the goroutine parsing the connection (read.go)
	box  mailbox // inbound work when the reactor reads the connection (mailbox.go)
}

func (e *Engine) newConn(id string, t transport.Transport) *Conn {
	c := &Conn{e: e}
	c.sc.Init(id, t)
	c.sc.Value = c
	return c
}

// ID returns the connection id, unique in the cluster.
func (c *Conn) ID() string { return c.sc.ID() }

// UserID returns the id Config.Authenticate gave the client, or "".
func (c *Conn) UserID() string { return c.user }

// RemoteAddr returns the peer address, or nil for an attached connection.
func (c *Conn) RemoteAddr() net.Addr {
	if c.nc == nil {
		return nil
	}
	return c.nc.RemoteAddr()
}

// home returns the shard that owns the connection.
func (c *Conn) home() *shard.Shard { return c.e.shardFor(c.sc.ID()) }

// Engine returns the engine the connection belongs to.
func (c *Conn) Engine() *Engine { return c.e }

// Subscribe subscribes the connection to channel, bypassing the Authorizer (the
// server decides). It reports whether it was a new subscription.
func (c *Conn) Subscribe(channel string) (bool, error) {
	if !c.e.ValidChannel(channel) {
		return false, ErrInvalidChannel
	}
	return c.home().Subscribe(&c.sc, channel)
}

// Unsubscribe removes the connection from channel and reports whether it was
// subscribed.
func (c *Conn) Unsubscribe(channel string) bool {
	return c.home().Unsubscribe(&c.sc, channel)
}

// Send sends data to this connection as a private message from the server.
func (c *Conn) Send(data []byte) error {
	if err := c.e.checkPayload(data); err != nil {
		return err
	}
	e := c.e
	e.ledger.received[srcServer].Add(1)
	f := e.encode(len(data)+40, func(b []byte) []byte { return e.codec.AppendPrivate(b, "", data) })
	err := c.sc.Send(f)
	f.Release()
	if err != nil {
		e.ledger.drop(DropConnClosed)
		return err
	}
	e.ledger.fannedOut.Add(1)
	e.metrics.privates.Inc()
	return nil
}

// Close sends a close frame with code and reason, then closes the connection.
func (c *Conn) Close(code uint16, reason string) {
	c.sc.Close(code, reason)
	if c.nc == nil {
		c.home().Unregister(&c.sc) // no reader will notice the close
	}
}

// register records the connection in its shard.
func (c *Conn) register() error {
	if err := c.home().Register(&c.sc); err != nil {
		if errors.Is(err, shard.ErrDuplicateID) {
			return ErrDuplicateConn
		}
		return ErrShutdown
	}
	if c.e.router != nil {
		c.e.router.ConnAdded(c.ID())
	}
	return nil
}

// sendEncoded encodes a protocol frame (a welcome, a reply: not a message the
// ledger counts) with enc and sends it to this connection only.
func (c *Conn) sendEncoded(sizeHint int, enc func([]byte) []byte) {
	f := frame.New(sizeHint)
	f.SetPayload(enc(f.Payload()))
	f.Seal(c.e.codec.Opcode())
	_ = c.sc.Send(f)
	f.Release()
}

func (c *Conn) reply(r *Reply) {
	f := c.encodeReply(r)
	_ = c.sc.Send(f)
	f.Release()
}

// encodeReply builds the protocol frame of a reply (not a message the ledger
// counts), with one reference held by the caller.
func (c *Conn) encodeReply(r *Reply) *frame.Frame {
	f := frame.New(len(r.Reason) + len(r.Channel) + len(r.ID) + len(r.Offset) + 64)
	f.SetPayload(c.e.codec.AppendReply(f.Payload(), r))
	return f.Seal(c.e.codec.Opcode())
}

// fail answers a request with an error reply and counts it.
func (c *Conn) fail(id []byte, code ErrorCode, reason string) {
	c.e.metrics.countError(code)
	c.reply(&Reply{Type: ReplyError, ID: id, Code: code, Reason: reason})
}

// handle runs one inbound data message. Called on the goroutine that runs the
// connection's messages (its mailbox goroutine, or its read loop).
func (c *Conn) handle(msg []byte) {
	e := c.e
	e.metrics.messagesIn.Inc()
	if h := e.cfg.Hooks.OnMessage; h != nil && h(c, msg) {
		return
	}
	var req Request
	if err := e.codec.Decode(msg, &req); err != nil {
		code := ErrorCodeOf(err)
		var ce *CodecError
		reason := err.Error()
		if errors.As(err, &ce) {
			reason = ce.Reason
		}
		e.logLimited("bad_message", "shardhub: bad client message", "conn", c.ID(), "code", code, "reason", reason)
		c.fail(req.ID, code, reason)
		return
	}
	e.metrics.countRequest(req.Type)
	switch req.Type {
	case RequestSubscribe:
		c.handleSubscribe(&req)
	case RequestUnsubscribe:
		if !e.ValidChannel(req.Channel) {
			c.fail(req.ID, CodeBadChannel, "invalid channel name")
			return
		}
		c.Unsubscribe(req.Channel)
		c.reply(&Reply{Type: ReplyUnsubscribed, ID: req.ID, Channel: req.Channel})
	case RequestPublish:
		c.handlePublish(&req)
	case RequestSend:
		c.handleSend(&req)
	}
}

func (c *Conn) authorize(req AuthRequest, id []byte) bool {
	az := c.e.cfg.Authorizer
	if az == nil {
		return true
	}
	err := az(context.Background(), req)
	if err == nil {
		return true
	}
	c.e.metrics.authDenials.Inc()
	c.e.logLimited("auth", "shardhub: authorizer denied", "conn", c.ID(), "user", c.user,
		"action", req.Action.String(), "channel", req.Channel, "err", err)
	c.fail(id, CodeForbidden, err.Error())
	return false
}

func (c *Conn) handleSubscribe(req *Request) {
	if !c.e.ValidChannel(req.Channel) {
		c.fail(req.ID, CodeBadChannel, "invalid channel name")
		return
	}
	if !c.authorize(AuthRequest{Action: ActionSubscribe, Conn: c, Channel: req.Channel}, req.ID) {
		return
	}
	if c.e.channelsFull(req.Channel) {
		c.fail(req.ID, CodeTooManyChannels, "this server holds too many channels")
		return
	}
	if c.e.history != nil {
		c.subscribeHistory(req) // history.go: the broker's subscription is live before the reply; recovery
		return
	}
	r := Reply{Type: ReplySubscribed, ID: req.ID, Channel: req.Channel}
	if req.HasSince {
		recovered := false
		r.Recovered = &recovered // no history without a broker that keeps it
	}
	c.subscribeAndReply(req, &r)
}

func (c *Conn) handlePublish(req *Request) {
	if !c.e.ValidChannel(req.Channel) {
		c.fail(req.ID, CodeBadChannel, "invalid channel name")
		return
	}
	if IsSystemChannel(req.Channel) {
		c.fail(req.ID, CodeForbidden, "channels starting with $ are published by the server only")
		return
	}
	if !c.authorize(AuthRequest{Action: ActionPublish, Conn: c, Channel: req.Channel}, req.ID) {
		return
	}
	if err := c.e.publish(srcClient, req.Channel, req.Data); err != nil {
		c.failFromError(req.ID, err)
		return
	}
	if len(req.ID) > 0 {
		c.reply(&Reply{Type: ReplyAck, ID: req.ID})
	}
}

func (c *Conn) handleSend(req *Request) {
	e := c.e
	if !e.cfg.AllowClientSend && e.cfg.Authorizer == nil {
		// No lookup at all: a refused send tells nothing about the target.
		c.fail(req.ID, CodeForbidden, "client-to-client send is disabled on this server")
		return
	}
	ctx := context.Background()
	// Resolve first, so the Authorizer judges the connection that would really
	// get the message.
	target, err := e.resolve(ctx, req.To)
	if err != nil {
		c.failFromError(req.ID, err)
		return
	}
	if !c.authorize(AuthRequest{Action: ActionSend, Conn: c, Target: target}, req.ID) {
		return
	}
	if err := c.e.sendPrivate(ctx, srcClient, target, req.To, c.ID(), req.Data); err != nil {
		c.failFromError(req.ID, err)
		return
	}
	if len(req.ID) > 0 {
		c.reply(&Reply{Type: ReplyAck, ID: req.ID})
	}
}

func (c *Conn) failFromError(id []byte, err error) {
	switch {
	case errors.Is(err, ErrConnNotFound):
		c.fail(id, CodeNotFound, "no such connection")
	case errors.Is(err, ErrQueueFull):
		c.fail(id, CodeOverloaded, "server overloaded, message dropped")
	case errors.Is(err, ErrMessageTooLarge):
		c.fail(id, CodeTooLarge, err.Error())
	case errors.Is(err, ErrInvalidChannel):
		c.fail(id, CodeBadChannel, "invalid channel name")
	case errors.Is(err, ErrShutdown):
		c.fail(id, CodeOverloaded, "server shutting down")
	case errors.Is(err, ErrBrokerUnavailable):
		c.fail(id, CodeOverloaded, "delivered on this server only: the cluster is unavailable")
	default:
		c.e.logLimited("request_failed", "shardhub: request failed", "conn", c.ID(), "err", err)
		c.fail(id, CodeInternal, "internal error")
	}
}

// Close codes used by the engine (RFC 6455 §7.4.1).
const (
	CloseNormal          = 1000
	CloseGoingAway       = shard.CloseGoingAway
	ClosePolicyViolation = 1008
	CloseTooBig          = 1009
	CloseInternalError   = 1011
	CloseTryAgainLater   = shard.CloseSlowConsumer
)

// Close codes (continued).
const (
	CloseProtocolError  = 1002
	CloseInvalidPayload = 1007
)
