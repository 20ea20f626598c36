package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/shardhub/shardhub/shard"
	"github.com/shardhub/shardhub/shard/frame"
)

// History and recovery (docs/protocol.md, subscribe "since").
//
// A channel with history gets its offsets from the broker (a Redis stream id),
// so its publications take a different path from other channels:
//
//	Publish → broker (XADD + PUBLISH, one script) → every subscribed instance,
//	this one included → BrokerHandler.HandlePublication(offset) → gate → fan-out
//
// Channels without history keep the fast path (local fan-out first, then the
// broker for the other instances).
//
// Recovery must hand a client exactly the publications after its offset, then
// the live ones, with no gap and no duplicate at the seam, although live
// publications reach the connection through its shard while recovered ones are
// read from Redis. subscribeRecover does it in this order:
//
//  1. A tap on the channel's gate starts copying every live publication of the
//     channel that reaches this instance (the connection is not subscribed yet,
//     so it gets none of them).
//  2. The broker's subscription to the channel is made live (Hold): from then on
//     every publication arrives here, and so lands in the tap.
//  3. The history after `since` is read. Anything published before the
//     subscription was live is in it (the script XADDs before it PUBLISHes).
//  4. The reply, then the recovered publications, are sent to the connection.
//  5. Under the gate (no live publication of the channel enters the fan-out),
//     the tap's publications newer than the last one sent are sent; a barrier
//     through the fan-out coordinator waits until the connection's shard has
//     handled every frame queued before it; then the connection is subscribed.
//     Every later publication reaches it through its shard, and none earlier.
//
// The gate is one of a fixed set of mutexes picked by the channel's hash, so a
// publication never races the creation of a per-channel gate.

const (
	historyGates = 64
	// holdTimeout bounds the wait for the broker's subscription before a plain
	// subscribe is answered.
	holdTimeout = 2 * time.Second
	// recoveryTimeout bounds the Redis work of one recovery (Hold and History).
	recoveryTimeout = 5 * time.Second
	// barrierTimeout bounds the wait for the fan-out barrier; past it the seam
	// is closed anyway (a duplicate is then possible, and logged).
	barrierTimeout = 2 * time.Second
	// maxTapped bounds the live publications buffered for one recovering
	// connection; past it the connection is closed with 1013 so it recovers
	// again rather than miss messages.
	maxTapped = 4096
)

// historyState is the engine's side of a HistoryBroker.
type historyState struct {
	e     *Engine
	b     HistoryBroker
	gates [historyGates]historyGate

	barrierOnce sync.Once
	barrierKeys []string // per shard: an id that hashes to it and is never a connection's
}

// historyGate serializes the live delivery of the channels hashed to it with
// the seams of their recoveries.
type historyGate struct {
	mu   sync.Mutex        // held while a live publication enters the fan-out, and across a seam.
	taps map[string][]*tap // channel → recoveries in progress; guarded by mu
}

// tap buffers the live publications of a channel for one recovering
// connection. Bounded by maxTapped: past it overflow is set and nothing more
// is kept.
type tap struct {
	pubs     []Publication // guarded by the gate's mu
	overflow bool          // guarded by the gate's mu
}

func newHistoryState(e *Engine, b HistoryBroker) *historyState {
	return &historyState{e: e, b: b}
}

func (h *historyState) gate(channel string) *historyGate {
	return &h.gates[xxhash.Sum64String(channel)%historyGates]
}

// deliver hands a live publication of a history channel to the fan-out, and
// to the taps of the recoveries in progress on it. Called on the broker's
// receiving goroutines.
func (h *historyState) deliver(channel, offset string, data []byte) error {
	g := h.gate(channel)
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range g.taps[channel] {
		if len(t.pubs) >= maxTapped {
			t.overflow = true
			continue
		}
		t.pubs = append(t.pubs, Publication{Offset: offset, Data: data})
	}
	return h.e.publishLocal(channel, offset, data)
}

func (g *historyGate) addTap(channel string, t *tap) {
	g.mu.Lock()
	if g.taps == nil {
		g.taps = make(map[string][]*tap)
	}
	g.taps[channel] = append(g.taps[channel], t)
	g.mu.Unlock()
}

// removeTapLocked drops t; the caller holds g.mu.
func (g *historyGate) removeTapLocked(channel string, t *tap) {
	ts := g.taps[channel]
	for i, x := range ts {
		if x == t {
			ts[i] = ts[len(ts)-1]
			ts[len(ts)-1] = nil
			ts = ts[:len(ts)-1]
			break
		}
	}
	if len(ts) == 0 {
		delete(g.taps, channel)
	} else {
		g.taps[channel] = ts
	}
}

func (g *historyGate) removeTap(channel string, t *tap) {
	g.mu.Lock()
	g.removeTapLocked(channel, t)
	g.mu.Unlock()
}

// publishHistory publishes on a history channel: the broker stores it, gives it
// its offset and hands it back to every subscribed instance, this one included.
// When the broker cannot take it (Redis down, its queue full) the publication
// is still delivered here, without an offset, so local delivery keeps working.
func (e *Engine) publishHistory(channel string, data []byte) error {
	err := e.broker.Publish(channel, data)
	if err == nil {
		return nil
	}
	e.metrics.brokerErrors.Inc()
	if lerr := e.publishLocal(channel, "", data); lerr != nil {
		return lerr
	}
	return fmt.Errorf("shardhub: broker publish: %w", err)
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
	if req.HasSince && h.b.HasHistory(req.Channel) {
		c.subscribeRecover(req)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), holdTimeout)
	release, err := h.b.Hold(ctx, req.Channel)
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

// subscribeAndReply subscribes c to req.Channel and sends reply, or the error.
func (c *Conn) subscribeAndReply(req *Request, reply *Reply) {
	if _, err := c.Subscribe(req.Channel); err != nil {
		if errors.Is(err, shard.ErrTooManySubscriptions) {
			c.fail(req.ID, CodeTooManySubs, "too many subscriptions")
		}
		return // otherwise the connection is closing
	}
	c.reply(reply)
}

// subscribeRecover subscribes c to a history channel with recovery from
// req.Since; see the top of this file. Runs on c's read goroutine, which it
// blocks for the Redis round trips (this connection only).
func (c *Conn) subscribeRecover(req *Request) {
	e, h, ch := c.e, c.e.history, req.Channel
	recovered := false
	reply := Reply{Type: ReplySubscribed, ID: req.ID, Channel: ch, Recovered: &recovered}
	plain := func() { c.subscribeAndReply(req, &reply) }
	if !validOffset(req.Since) {
		e.metrics.countErrorKind("recovery_bad_offset")
		plain() // nothing to recover from: the client must resync
		return
	}
	// A client re-subscribing with since would otherwise get live publications
	// during the recovery too: start it from scratch.
	c.Unsubscribe(ch)
	g := h.gate(ch)
	t := &tap{}
	g.addTap(ch, t)
	tapped := true
	defer func() {
		if tapped {
			g.removeTap(ch, t)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
	defer cancel()
	release, err := h.b.Hold(ctx, ch)
	if err != nil {
		e.cfg.Logger.Warn("shardhub: recovery impossible, broker subscription not live", "conn", c.ID(), "channel", ch, "err", err)
		e.metrics.countErrorKind("recovery_failed")
		plain()
		return
	}
	pubs, ok, err := h.b.History(ctx, ch, req.Since)
	if err != nil || !ok {
		if err != nil {
			e.cfg.Logger.Warn("shardhub: reading channel history failed", "conn", c.ID(), "channel", ch, "err", err)
			e.metrics.countErrorKind("recovery_failed")
		}
		release()
		plain()
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

	// The seam: no live publication of ch enters the fan-out until c is subscribed.
	g.mu.Lock()
	g.removeTapLocked(ch, t)
	tapped = false
	overflow := t.overflow
	for _, p := range t.pubs {
		if CompareOffsets(p.Offset, last) > 0 {
			c.sendPublication(ch, p)
			last = p.Offset
		}
	}
	var subErr error
	if !overflow {
		if err := e.barrier(c.ID()); err != nil {
			e.cfg.Logger.Warn("shardhub: recovery barrier", "conn", c.ID(), "channel", ch, "err", err)
		}
		_, subErr = c.Subscribe(ch)
	}
	g.mu.Unlock()
	intact := release()
	switch {
	case overflow:
		e.metrics.countErrorKind("recovery_overflow")
		e.cfg.Logger.Warn("shardhub: closing recovering connection: too many live publications during recovery",
			"conn", c.ID(), "channel", ch, "limit", maxTapped)
		c.Close(CloseTryAgainLater, "recovery overflow, reconnect and recover again")
	case subErr != nil:
		if errors.Is(subErr, shard.ErrTooManySubscriptions) {
			c.fail(req.ID, CodeTooManySubs, "too many subscriptions")
		}
	case !intact:
		// The broker lost Redis during the recovery: publications may have been
		// missed in between. Make the client come back and recover again.
		e.metrics.countErrorKind("recovery_interrupted")
		e.cfg.Logger.Warn("shardhub: closing recovering connection: broker subscription interrupted", "conn", c.ID(), "channel", ch)
		c.Close(CloseTryAgainLater, "recovery interrupted, reconnect and recover again")
	}
}

// sendPublication sends one recovered publication to c alone.
func (c *Conn) sendPublication(channel string, p Publication) {
	c.sendEncoded(len(p.Data)+len(channel)+len(p.Offset)+48, func(b []byte) []byte {
		return c.e.codec.AppendPublication(b, channel, p.Offset, p.Data)
	})
}

// barrier returns once the shard of connection id has handled every frame
// queued in the fan-out before the call. It queues a frame for an id that hashes
// to that shard but is never a connection's, so the shard drops it; the shard
// handles its inbox in order, so when it has let go of that frame it has let go
// of everything before it.
func (e *Engine) barrier(id string) error {
	h := e.history
	h.barrierOnce.Do(func() {
		keys := make([]string, len(e.shards))
		for found, i := 0, 0; found < len(keys); i++ {
			k := "\x00barrier-" + strconv.Itoa(i)
			if s := e.ShardOf(k); keys[s] == "" {
				keys[s] = k
				found++
			}
		}
		h.barrierKeys = keys
	})
	f := frame.New(0)
	f.Seal(frame.OpPing) // never written; a harmless ping if it ever were
	f.Retain(1)          // ours, to watch the others go
	defer f.Release()
	if err := e.enqueue(outbound{target: shard.ToConn, key: h.barrierKeys[e.ShardOf(id)], frame: f}, nopCounter{}); err != nil {
		return err
	}
	deadline := time.Now().Add(barrierTimeout)
	for wait := 20 * time.Microsecond; f.Refs() > 1; wait = min(wait*2, time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("shardhub: fan-out barrier not passed after %v", barrierTimeout)
		}
		time.Sleep(wait)
	}
	return nil
}

// nopCounter counts nothing: barriers are not messages.
type nopCounter struct{}

func (nopCounter) Inc()        {}
func (nopCounter) Get() uint64 { return 0 }

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
