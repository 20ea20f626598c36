package shard

import "sync/atomic"

// Counters are the shard's cumulative counters, readable from any goroutine.
//
// The delivery ledger: every message frame the shard hands to a connection (a
// recipient) ends as written or dropped for a reason; until then it is
// pending in that connection's queue:
//
//	Recipients = Written + DroppedSlow + DroppedClosed + DroppedShutdown + Pending
//
// The counters are separate atomics: the identity holds exactly whenever the
// shard and its connections are quiet, and within the writes in flight
// otherwise.
type Counters struct {
	Conns           int64 // connections registered now
	Registered      int64 // registrations since start
	Recipients      int64 // message frames handed to connections
	Written         int64 // message frames written whole to their socket
	DroppedSlow     int64 // message frames dropped with an evicted slow consumer
	DroppedClosed   int64 // message frames dropped because the connection closed (or its write failed) first
	DroppedShutdown int64 // message frames dropped because the shard shut down
	Pending         int64 // message frames waiting in connection queues, as of the last batch or drain write
	Bytes           int64 // bytes written to transports
	Forced          int64 // slow consumers evicted
	WriteErrors     int64 // connections closed after a write error
	Batches         int64 // command batches handled
}

// counters holds the atomics behind Counters.
type counters struct {
	conns, registered                           atomic.Int64
	recipients, written, pending                atomic.Int64
	droppedSlow, droppedClosed, droppedShutdown atomic.Int64
	bytes, forced, writeErrors, batches         atomic.Int64
}

// Counters returns the shard's counters; it does not wait for the shard goroutine.
func (s *Shard) Counters() Counters {
	return Counters{
		Conns:           s.stats.conns.Load(),
		Registered:      s.stats.registered.Load(),
		Recipients:      s.stats.recipients.Load(),
		Written:         s.stats.written.Load(),
		DroppedSlow:     s.stats.droppedSlow.Load(),
		DroppedClosed:   s.stats.droppedClosed.Load(),
		DroppedShutdown: s.stats.droppedShutdown.Load(),
		Pending:         s.stats.pending.Load(),
		Bytes:           s.stats.bytes.Load(),
		Forced:          s.stats.forced.Load(),
		WriteErrors:     s.stats.writeErrors.Load(),
		Batches:         s.stats.batches.Load(),
	}
}

// dropped counts n message frames dropped for cause.
func (st *counters) dropped(cause Cause, n int64) {
	switch cause {
	case CauseSlowConsumer:
		st.droppedSlow.Add(n)
	case CauseShutdown:
		st.droppedShutdown.Add(n)
	default:
		st.droppedClosed.Add(n)
	}
}
