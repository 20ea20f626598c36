package engine

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
// messages the engine hands it (Publish and Broadcast returning nil):
//
//	Handed = Published + Σ Dropped + Backlog
//
// and for what other instances sent: Received messages arrived, Lost were
// detected missing (each is also counted in Dropped[DropBrokerLost]).
type BrokerLedger struct {
	Handed    uint64                // messages Publish/Broadcast accepted
	Published uint64                // messages the cluster transport took
	Backlog   uint64                // messages waiting now (outage backlog and queues)
	Dropped   map[DropReason]uint64 // by reason
	Received  uint64                // messages from other instances handed to the engine
	Lost      uint64                // messages from other instances detected missing
}

// LedgerBroker is implemented by brokers that keep a BrokerLedger; the engine
// adds it to its own ledger in Stats and /metrics.
type LedgerBroker interface {
	Broker
	// Ledger returns a snapshot of the broker's counters. It must not block.
	Ledger() BrokerLedger
}
