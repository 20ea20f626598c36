package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shardhub/shardhub/shard"
)

// History and recovery (docs/protocol.md, subscribe "since").
//
// A channel with history gets its offsets from the broker (a Redis stream id),
// so its publications take a different path from other channels:
//
//	Publish → broker (XADD + PUBLISH, one script) → every subscribed instance,
//	this one included → BrokerHandler.HandlePublication(offset) → fan-out
//
// Channels without history keep the fast path (local fan-out first, then the
// broker for the other instances).
//
// Recovery hands a client exactly the publications after its offset, then the
// live ones, with no gap and no duplicate at the seam. It is per-subscription
// state in the connection's shard (shard/recovery.go), in this order:
//
//  1. The broker's subscription to the channel is made live (Hold): from then
//     on every publication of the channel reaches this instance.
//  2. The connection is subscribed in recovering mode: the live publications
//     that reach it from now on are kept by its shard, with their offsets.
//  3. The history after `since` is read. Anything published before step 1 is
//     in it (the broker's script XADDs before it PUBLISHes).
//  4. The reply, then the recovered publications, are posted to the
//     connection, then EndRecovery(last): the shard writes the kept
//     publications newer than last and drops the duplicates still in flight.
//
// The shard's inbox orders steps 2 and 4 against the live publications; no lock
// is held while Redis answers, so a slow history read delays this connection
// only, and the broker's reader never waits for a recovery.

const (
	// holdTimeout bounds the wait for the broker's subscription before a plain
	// subscribe is answered.
	holdTimeout = 2 * time.Second
	// recoveryTimeout bounds the Redis work of one recovery (Hold and History).
	recoveryTimeout = 5 * time.Second
)

// publishHistory publishes on a history channel: the broker stores it, gives it
// its offset and hands it back to every subscribed instance, this one included.
// When the broker cannot take it (Redis down, its queue full) the publication
// is still delivered here, without an offset, so local delivery keeps working.
func (e *Engine) publishHistory(src source, channel string, data []byte) error {
	err := e.broker.Publish(channel, data)
	if err == nil {
		e.ledger.received[src].Add(1)
		e.ledger.forwarded.Add(1) // delivered here when the broker hands it back
		e.metrics.publications.Inc()
		return nil
	}
	e.metrics.brokerErrors.Inc()
	if lerr := e.publishLocal(src, channel, "", data); lerr != nil {
		return lerr
	}
	return fmt.Errorf("%w: publish: %w", ErrBrokerUnavailable, err)
}

// subscribeHistory subscribes c through a HistoryBroker. With since on a
// history channel it recovers (subscribeRecover). Otherwise it makes sure the
// broker's subscription to the channel is live before the reply, so that
// "publications after the reply are delivered" holds cluster-wide and for
// history channels (whose publications come back through the broker) on this
// instance too. The wait is one round trip for the first local subscriber of
// a channel, nothing for the others; when Redis is down it gives up after
// holdTimeout and subscribes anyway (local delivery keeps working).
func (c *Conn) subscribeHistory(req *Request) {
	h := c.e.history
	if req.HasSince && h.HasHistory(req.Channel) {
		c.subscribeRecover(req)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), holdTimeout)
	release, err := h.Hold(ctx, req.Channel)
	cancel()
	if err != nil {
		c.e.cfg.Logger.Debug("shardhub: subscribing before the broker's subscription is live", "conn", c.ID(), "channel", req.Channel, "err", err)
	}
	reply := Reply{Type: ReplySubscribed, ID: req.ID, Channel: req.Channel}
	if req.HasSince {
		recovered := false // no history on this channel
		reply.Recovered = &recovered
	}
	c.subscribeAndReply(req, &reply)
	if release != nil {
		release()
	}
}

// subscribeAndReply subscribes c to req.Channel and sends reply, or the
// error. The shard queues the reply in the same step as the subscription, so
// no publication of the channel reaches the client before it.
func (c *Conn) subscribeAndReply(req *Request, reply *Reply) {
	f := c.encodeReply(reply)
	_, err := c.home().SubscribeAndSend(&c.sc, req.Channel, f)
	f.Release()
	if errors.Is(err, shard.ErrTooManySubscriptions) {
		c.fail(req.ID, CodeTooManySubs, "too many subscriptions")
	} // any other error: the connection is closing
}

// subscribeRecover subscribes c to a history channel with recovery from
// req.Since; see the top of this file. It runs on the goroutine that handles
// c's requests, which it blocks for the Redis round trips (this connection
// only).
func (c *Conn) subscribeRecover(req *Request) {
	e, h, ch := c.e, c.e.history, req.Channel
	recovered := false
	reply := Reply{Type: ReplySubscribed, ID: req.ID, Channel: ch, Recovered: &recovered}
	if !validOffset(req.Since) {
		e.metrics.countErrorKind("recovery_bad_offset")
		c.subscribeAndReply(req, &reply) // nothing to recover from: the client must resync
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
	defer cancel()
	release, err := h.Hold(ctx, ch)
	if err != nil {
		e.logLimited("recovery", "shardhub: recovery impossible, broker subscription not live", "conn", c.ID(), "channel", ch, "err", err)
		e.metrics.countErrorKind("recovery_failed")
		c.subscribeAndReply(req, &reply)
		return
	}
	defer func() {
		if release != nil {
			release()
		}
	}()
	if err := c.home().SubscribeRecovering(&c.sc, ch); err != nil {
		if errors.Is(err, shard.ErrTooManySubscriptions) {
			c.fail(req.ID, CodeTooManySubs, "too many subscriptions")
		}
		return // otherwise the connection is closing
	}
	pubs, ok, err := h.History(ctx, ch, req.Since)
	if err != nil {
		e.logLimited("recovery", "shardhub: reading channel history failed", "conn", c.ID(), "channel", ch, "err", err)
		e.metrics.countErrorKind("recovery_failed")
	}
	if err != nil || !ok {
		c.reply(&reply) // recovered: false; the kept live publications follow
		c.home().EndRecovery(&c.sc, ch, "", false)
		return
	}
	recovered = true
	last := req.Since
	if n := len(pubs); n > 0 {
		last = pubs[n-1].Offset
	}
	reply.Offset = last
	c.reply(&reply)
	for _, p := range pubs {
		c.sendPublication(ch, p)
	}
	c.home().EndRecovery(&c.sc, ch, last, true)
	intact := release()
	release = nil
	if !intact {
		// The broker lost Redis during the recovery: publications may have been
		// missed in between. Make the client come back and recover again.
		e.metrics.countErrorKind("recovery_interrupted")
		e.logLimited("recovery", "shardhub: closing recovering connection: broker subscription interrupted", "conn", c.ID(), "channel", ch)
		c.Close(CloseTryAgainLater, "recovery interrupted, reconnect and recover again")
	}
}

// sendPublication sends one recovered publication to c alone.
func (c *Conn) sendPublication(channel string, p Publication) {
	f := c.e.encode(len(p.Data)+len(channel)+len(p.Offset)+48, func(b []byte) []byte {
		return c.e.codec.AppendPublication(b, channel, p.Offset, p.Data)
	})
	_ = c.sc.Send(f)
	f.Release()
}

// validOffset reports whether s is an offset CompareOffsets can order.
func validOffset(s string) bool {
	_, _, ok := parseOffset(s)
	return ok
}

func parseOffset(s string) (ms, seq uint64, ok bool) {
	a, b, two := strings.Cut(s, "-")
	ms, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if two {
		if seq, err = strconv.ParseUint(b, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return ms, seq, true
}

// CompareOffsets orders two history offsets ("<ms>-<seq>" stream ids or
// decimal numbers): -1 when a is older than b, 0 when equal, +1 when newer. An
// offset that does not parse is older than any that does.
func CompareOffsets(a, b string) int {
	am, as, aok := parseOffset(a)
	bm, bs, bok := parseOffset(b)
	switch {
	case !aok || !bok:
		return boolCmp(aok, bok)
	case am != bm:
		return uintCmp(am, bm)
	default:
		return uintCmp(as, bs)
	}
}

func uintCmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
