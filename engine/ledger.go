package engine

import (
	"fmt"
	"sync/atomic"
)

// The ledger: every message the engine accepts ends as delivered or as dropped
// for a named reason (docs/operations.md, "The ledger").

// DropReason names why an accepted message, or one delivery of it, ended
// without being written to a client.
type DropReason uint8

// Drop reasons. String gives the metric label
// (shardhub_dropped_total{reason=…}).
const (
	// DropQueueFull: the broadcast queue was full when the message arrived.
	DropQueueFull DropReason = iota + 1
	// DropSlowConsumer: the recipient was evicted because its outbound queue
	// overflowed; the frames it still held are dropped with it.
	DropSlowConsumer
	// DropConnClosed: the recipient closed, or its write failed, before the
	// frame was written.
	DropConnClosed
	// DropBrokerUnavailable: the broker could not take the message for the
	// other instances (Redis unreachable and no backlog room, or a send that
	// failed for good).
	DropBrokerUnavailable
	// DropBacklogOverflow: the broker's outage backlog was full.
	DropBacklogOverflow
	// DropBrokerLost: publications of other instances that this instance
	// should have received and did not (a gap in the publisher's sequence).
	DropBrokerLost
	// DropShutdown: the engine (or broker) stopped before the message was
	// written.
	DropShutdown
	numDropReasons
)

// String returns the reason's metric label.
func (r DropReason) String() string {
	switch r {
	case DropQueueFull:
		return "queue_full"
	case DropSlowConsumer:
		return "slow_consumer"
	case DropConnClosed:
		return "conn_closed"
	case DropBrokerUnavailable:
		return "broker_unavailable"
	case DropBacklogOverflow:
		return "backlog_overflow"
	case DropBrokerLost:
		return "broker_lost"
	case DropShutdown:
		return "shutdown"
	}
	return "unknown"
}

// BrokerLedger is a broker's account of the messages that cross it. For the
// messages the engine hands it (every Publish and Broadcast call: one it
// refuses at once is counted in Handed and in Dropped together, and the engine
// does not count that drop again):
//
//	Handed = Published + Σ Dropped + Backlog
//
// and for what other instances sent: Received messages arrived and were handed
// to the engine, Lost were detected missing (sequence gaps). Lost is outside
// the Handed balance: those messages were accepted, and are counted, by the
// instances that published them.
type BrokerLedger struct {
	Handed    uint64                `json:"handed"`    // messages Publish/Broadcast accepted
	Published uint64                `json:"published"` // messages the cluster transport took
	Backlog   uint64                `json:"backlog"`   // messages waiting now (outage backlog and queues)
	Dropped   map[DropReason]uint64 `json:"dropped"`   // by reason
	Received  uint64                `json:"received"`  // messages from other instances handed to the engine
	Lost      uint64                `json:"lost"`      // messages from other instances detected missing
}

// LedgerBroker is implemented by brokers that keep a BrokerLedger; the engine
// adds it to its own ledger in Stats and /metrics.
type LedgerBroker interface {
	Broker
	// Ledger returns a snapshot of the broker's counters. It must not block.
	Ledger() BrokerLedger
}

// MarshalText writes the reason's label, so maps keyed by DropReason become
// JSON objects keyed by label.
func (r DropReason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a reason's label (an unknown label is an error).
func (r *DropReason) UnmarshalText(b []byte) error {
	for x := DropQueueFull; x < numDropReasons; x++ {
		if x.String() == string(b) {
			*r = x
			return nil
		}
	}
	return fmt.Errorf("shardhub: unknown drop reason %q", b)
}

// source is where a message entered the engine.
type source uint8

const (
	srcServer source = iota // Broadcast, Publish, Send: the embedder, the HTTP API
	srcClient               // a client's publish or send
	srcBroker               // another instance, through the broker
	numSources
)

func (s source) String() string {
	switch s {
	case srcServer:
		return "server"
	case srcClient:
		return "client"
	}
	return "broker"
}

// ledger holds the message stage of the engine's ledger (the delivery stage
// lives in the shards' counters, the broker's in the broker).
type ledger struct {
	received  [numSources]atomic.Uint64
	fannedOut atomic.Uint64 // handed to every shard concerned (possibly none)
	forwarded atomic.Uint64 // handed to the broker for delivery elsewhere (a history channel, another instance's connection)
	dropped   [numDropReasons]atomic.Uint64
}

func (l *ledger) drop(r DropReason) { l.dropped[r].Add(1) }

// Ledger is the engine's account of every message it accepted, in three
// stages, each a balance (docs/operations.md, "The ledger"):
//
//	Messages:   Σ Received = FannedOut + Forwarded + Σ Dropped + Queued
//	Deliveries: Recipients = Written + Σ Dropped + Pending
//	Broker:     Handed = Published + Σ Dropped + Backlog
//
// A message fanned out becomes one recipient per connection it was handed to.
// The counters are read one by one: the identities hold exactly when the
// engine is at rest (Balanced says whether they held in this snapshot).
type Ledger struct {
	Messages   MessageLedger  `json:"messages"`
	Deliveries DeliveryLedger `json:"deliveries"`
	Broker     *BrokerLedger  `json:"broker,omitempty"`
	Balanced   bool           `json:"balanced"`
}

// MessageLedger is the message stage: what entered the engine and how it left
// the coordinator.
type MessageLedger struct {
	Received  map[string]uint64     `json:"received"` // by source: server, client, broker
	FannedOut uint64                `json:"fanned_out"`
	Forwarded uint64                `json:"forwarded"`
	Dropped   map[DropReason]uint64 `json:"dropped"`
	Queued    uint64                `json:"queued"`
}

// DeliveryLedger is the delivery stage: one entry per connection a message
// was handed to.
type DeliveryLedger struct {
	Recipients uint64                `json:"recipients"`
	Written    uint64                `json:"written"`
	Dropped    map[DropReason]uint64 `json:"dropped"`
	Pending    uint64                `json:"pending"`
}

// Ledger returns a snapshot of the engine's ledger, the broker's included
// when it keeps one (LedgerBroker).
func (e *Engine) Ledger() Ledger {
	var l Ledger
	l.Deliveries.Dropped = map[DropReason]uint64{DropSlowConsumer: 0, DropConnClosed: 0, DropShutdown: 0}
	for _, s := range e.shards {
		c := s.Counters()
		l.Deliveries.Recipients += uint64(c.Recipients)
		l.Deliveries.Written += uint64(c.Written)
		l.Deliveries.Pending += uint64(c.Pending)
		l.Deliveries.Dropped[DropSlowConsumer] += uint64(c.DroppedSlow)
		l.Deliveries.Dropped[DropConnClosed] += uint64(c.DroppedClosed)
		l.Deliveries.Dropped[DropShutdown] += uint64(c.DroppedShutdown)
	}
	m := &l.Messages
	m.Received = make(map[string]uint64, numSources)
	var in uint64
	for s := range numSources {
		n := e.ledger.received[s].Load()
		m.Received[s.String()] = n
		in += n
	}
	m.FannedOut = e.ledger.fannedOut.Load()
	m.Forwarded = e.ledger.forwarded.Load()
	m.Queued = uint64(len(e.queue) + len(e.clientQueue))
	m.Dropped = make(map[DropReason]uint64)
	out := m.FannedOut + m.Forwarded + m.Queued
	for r := DropQueueFull; r < numDropReasons; r++ {
		if n := e.ledger.dropped[r].Load(); n > 0 || r == DropQueueFull || r == DropShutdown {
			m.Dropped[r] = n
			out += n
		}
	}
	d := &l.Deliveries
	dd := d.Written + d.Pending
	for _, n := range d.Dropped {
		dd += n
	}
	l.Balanced = in == out && d.Recipients == dd
	if lb, ok := e.broker.(LedgerBroker); ok {
		b := lb.Ledger()
		l.Broker = &b
		bd := b.Published + b.Backlog
		for _, n := range b.Dropped {
			bd += n
		}
		l.Balanced = l.Balanced && b.Handed == bd
	}
	return l
}
