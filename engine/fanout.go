package engine

import (
	"math/bits"
	"time"
	"unicode/utf8"

	"github.com/shardhub/shardhub/shard/frame"
)

// The fan-out coordinator: messages encoded once into a pooled frame wait in a
// bounded queue; one goroutine hands each frame to every shard concerned (the
// shards then write it to their connections in parallel).
//
// Two queues feed it. Messages from the server side (Broadcast, Publish, the
// HTTP API, other instances through the broker) use the broadcast queue
// (Config.BroadcastQueue); publications from clients use their own, smaller
// queue (Config.ClientPublishQueue), which the coordinator serves only when the
// broadcast queue is empty. Clients within their rate limits can therefore fill
// their own share and be told "overloaded", but never make a backend's publish
// fail. A full queue drops the message, counts it and returns ErrQueueFull; a
// producer never waits.

// outKind says which connections an outbound message goes to.
type outKind uint8

const (
	outBroadcast outKind = iota // every connection
	outPublish                  // the subscribers of key
)

// outbound is one encoded message waiting for the coordinator.
type outbound struct {
	kind   outKind
	key    string // channel
	offset string // history offset of a publication, or ""
	frame  *frame.Frame
}

// encode builds a sealed message frame: enc appends the codec's payload.
//
// Only valid UTF-8 goes out in a text frame: JSONCodec guarantees it (it
// replaces invalid sequences); another codec's text payload is checked, and
// sent in a binary frame when it is not valid.
func (e *Engine) encode(sizeHint int, enc func([]byte) []byte) *frame.Frame {
	f := frame.New(sizeHint)
	f.SetPayload(enc(f.Payload()))
	op := e.codec.Opcode()
	if op == frame.OpText && e.checkText && !utf8.Valid(f.Payload()) {
		op = frame.OpBinary
	}
	return f.Seal(op).SetMessage()
}

// broadcastLocal delivers data to every connection of this instance.
func (e *Engine) broadcastLocal(src source, data []byte) error {
	f := e.encode(len(data)+32, func(b []byte) []byte { return e.codec.AppendBroadcast(b, data) })
	return e.enqueue(src, outbound{kind: outBroadcast, frame: f})
}

// publishLocal delivers a publication to this instance's subscribers of
// channel. A channel without local subscribers costs no encoding.
func (e *Engine) publishLocal(src source, channel, offset string, data []byte) error {
	e.ledger.received[src].Add(1)
	if !e.hasLocalSubscribers(channel) {
		e.ledger.fannedOut.Add(1) // to no one: nothing is lost
		e.metrics.publications.Inc()
		return nil
	}
	f := e.encode(len(data)+len(channel)+len(offset)+48, func(b []byte) []byte {
		return e.codec.AppendPublication(b, channel, offset, data)
	})
	return e.push(src, outbound{kind: outPublish, key: channel, offset: offset, frame: f})
}

// enqueue counts a message from src and puts it on its queue (push).
func (e *Engine) enqueue(src source, o outbound) error {
	e.ledger.received[src].Add(1)
	return e.push(src, o)
}

// push puts an encoded message on the queue of its source without blocking; a
// full queue, or a shutdown, drops it (counted).
func (e *Engine) push(src source, o outbound) error {
	if e.closing.Load() {
		o.frame.Release()
		e.ledger.drop(DropShutdown)
		return ErrShutdown
	}
	q := e.queue
	if src == srcClient {
		q = e.clientQueue
	}
	select {
	case q <- o:
	default:
		if src != srcBroker || !e.waitForRoom(q, o) {
			o.frame.Release()
			e.ledger.drop(DropQueueFull)
			e.metrics.dropped.Inc()
			return ErrQueueFull
		}
	}
	if o.kind == outBroadcast {
		e.metrics.broadcasts.Inc()
	} else {
		e.metrics.publications.Inc()
	}
	return nil
}

// brokerWait is how long a message from the broker waits for room in a full
// broadcast queue. The broker hands messages over from a worker of its own,
// not from its Redis reader, so waiting a little turns a burst (an outage's
// backlog flushed at once) into back-pressure on the broker's hand-off queue
// rather than drops here.
const brokerWait = time.Second

// waitForRoom puts o on q within brokerWait; false when it stayed full (or the
// engine stopped).
func (e *Engine) waitForRoom(q chan outbound, o outbound) bool {
	t := time.NewTimer(brokerWait)
	defer t.Stop()
	select {
	case q <- o:
		return true
	case <-t.C:
	case <-e.quit:
	}
	return false
}

// coordinate is the fan-out coordinator. Runs in its own goroutine until
// Shutdown; it blocks only on a full shard inbox, which is what makes the
// queues fill and drop under overload.
func (e *Engine) coordinate() {
	defer close(e.coord)
	var targets []uint64
	for {
		select {
		case o := <-e.queue: // the server side first
			targets = e.fanOut(o, targets)
			continue
		default:
		}
		select {
		case o := <-e.queue:
			targets = e.fanOut(o, targets)
		case o := <-e.clientQueue:
			targets = e.fanOut(o, targets)
		case <-e.quit:
			e.dropQueued(e.queue)
			e.dropQueued(e.clientQueue)
			return
		}
	}
}

// dropQueued empties q at shutdown, counting what it held.
func (e *Engine) dropQueued(q chan outbound) {
	for {
		select {
		case o := <-q:
			o.frame.Release()
			e.ledger.drop(DropShutdown)
		default:
			return
		}
	}
}

func (e *Engine) fanOut(o outbound, targets []uint64) []uint64 {
	switch o.kind {
	case outBroadcast:
		for _, s := range e.shards {
			o.frame.Retain(1)
			s.Broadcast(o.frame)
		}
	case outPublish:
		e.chanMu.Lock()
		targets = append(targets[:0], e.chans[o.key]...)
		e.chanMu.Unlock()
		for w, word := range targets {
			for word != 0 {
				i := w*64 + bits.TrailingZeros64(word)
				word &= word - 1
				o.frame.Retain(1)
				e.shards[i].Publish(o.key, o.offset, o.frame)
			}
		}
	}
	o.frame.Release()
	e.ledger.fannedOut.Add(1)
	return targets
}

// HasSubscribers reports whether channel has subscribers on this instance. It
// does not wait for the shards.
func (e *Engine) HasSubscribers(channel string) bool { return e.hasLocalSubscribers(channel) }

// Subscribers counts the connections of this instance subscribed to channel,
// asking the shards that have any (one round trip each).
func (e *Engine) Subscribers(channel string) int {
	e.chanMu.Lock()
	set := append([]uint64(nil), e.chans[channel]...)
	e.chanMu.Unlock()
	n := 0
	for w, word := range set {
		for word != 0 {
			i := w*64 + bits.TrailingZeros64(word)
			word &= word - 1
			n += e.shards[i].Subscribers(channel)
		}
	}
	return n
}

// channelsFull reports whether a client's subscription to channel would
// create a channel past Config.MaxChannels. The check is not atomic with the
// subscription: concurrent first subscribers may pass it by a few, which is
// what a cap on memory needs.
func (e *Engine) channelsFull(channel string) bool {
	e.chanMu.Lock()
	defer e.chanMu.Unlock()
	_, exists := e.chans[channel]
	return !exists && len(e.chans) >= e.cfg.MaxChannels
}

func (e *Engine) hasLocalSubscribers(channel string) bool {
	e.chanMu.Lock()
	_, ok := e.chans[channel]
	e.chanMu.Unlock()
	return ok
}

// onChannel runs on a shard goroutine when the shard gains its first subscriber
// of channel or loses its last; the engine subscribes the broker on the first
// local subscriber and unsubscribes it after the last.
func (e *Engine) onChannel(idx int, channel string, active bool) {
	e.chanMu.Lock()
	defer e.chanMu.Unlock()
	set := e.chans[channel]
	w, bit := idx/64, uint64(1)<<(idx%64)
	if active {
		if set == nil {
			set = make([]uint64, (len(e.shards)+63)/64)
			e.chans[channel] = set
			e.broker.Subscribe(channel)
		}
		set[w] |= bit
		return
	}
	if set == nil {
		return
	}
	set[w] &^= bit
	for _, word := range set {
		if word != 0 {
			return
		}
	}
	delete(e.chans, channel)
	e.broker.Unsubscribe(channel)
}
