// Package shard is one hub actor of the engine: a goroutine that owns a set of
// connections, their channel subscriptions and the per-target message counts.
//
// # Ownership
//
// Run's goroutine alone reads and writes the connection table (by id and as a
// dense list for iteration), the channel → subscribers table and each Conn's
// subscription list. Other goroutines use request/reply calls (Register,
// Unregister, Subscribe, Unsubscribe, Lookup, Stats, Channels), which every shard
// answers, also during shutdown, and Deliver, which queues a frame in the bounded
// inbox. Counters (Counters) are atomics, readable without a round trip.
//
// A Conn's outbound queue is the one piece of state shared between goroutines: the
// shard, the connection's read goroutine (pongs, close frames, replies) and the
// connection's drain goroutine all write through it under Conn.mu. Whoever finds
// the queue empty and no drain running writes directly, without blocking
// (Transport.TryWrite); leftovers are queued and a drain goroutine, started for
// that connection only, writes them with blocking writes and exits when the queue
// is empty.
//
// # Batching
//
// Run handles the deliveries waiting in its inbox as one batch (up to
// Config.MaxBatch): a batch of broadcasts is written to each connection with a
// single TryWrite carrying every frame of the batch, and a mixed batch queues each
// frame on its targets and then flushes each connection once. Under load batches
// grow by themselves, so the number of write system calls per delivered frame
// falls exactly when it matters.
//
// # What may block
//
// Nothing on the shard goroutine blocks on a connection: TryWrite is non-blocking
// and a full queue evicts. Deliver blocks while the inbox is full (the engine's
// coordinator relies on that for back-pressure); callbacks (OnChannel, OnRemove)
// run on the shard goroutine and must not block.
package shard
