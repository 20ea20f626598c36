// Package shard is one hub actor of the engine: a goroutine that owns a set of
// connections, their channel subscriptions and their recoveries, and writes
// every frame its connections get.
//
// # One ordered command stream
//
// Everything that touches a shard's connections travels one bounded, typed
// inbox, handled in order by the Run goroutine: frames (Broadcast, Publish,
// SendTo, Conn.Send), closes, registrations, subscription changes, recovery
// steps, lookups, stats and barriers. Ordering questions ("does a frame posted
// before this subscribe reach the new subscriber?", "is the close frame written
// after the reply?") are answered by that one stream. Requests that need an
// answer carry a reply channel; every command taken is answered, also during
// shutdown, and one posted after the shard stopped is disposed of by its
// poster (frame released, request answered with ErrShutdown).
//
// # Ownership
//
// The Run goroutine alone reads and writes the connection table (by id, and as
// a dense list with a parallel array of write slots for broadcasts), the
// channel → subscribers table, each Conn's subscription list, the recovery
// states and the per-kind message counts. Counters (Counters) are atomics,
// readable without a round trip.
//
// A Conn's outbound queue and send-side state are guarded by Conn.mu. The
// shard is the connection's only writer while no drain goroutine runs: its
// fast path is one atomic load of the state word and a non-blocking TryWrite,
// without the lock. When the socket does not take everything, the rest is
// queued under Conn.mu and a drain goroutine, started for that connection
// only, writes it with blocking writes (never holding Conn.mu during a write)
// and exits once the queue is empty; meanwhile the shard appends to the queue
// under Conn.mu. Before registration, the goroutine that owns the Conn writes
// directly under Conn.mu.
//
// Lock order: no lock is held while waiting on a shard (a request, or a post
// to a full inbox). Two Conn.mu are never held together, and Conn.mu is never
// held across a blocking write; the transport's Close runs under it and may
// take the transport's own locks (a TCP transport closes its reactor
// registration first). The shard holds no lock of its own; the callbacks it
// runs (OnChannel, OnRemove) may take the engine's locks, never while a
// Conn.mu is held. docs/locking.md lists the whole engine's order.
//
// # Batching
//
// Run handles the commands waiting in its inbox as one batch (up to
// Config.MaxBatch): a batch of broadcasts is written to each connection with a
// single TryWrite carrying every frame of the batch, and a mixed batch queues
// each frame on its targets in inbox order and then flushes each connection
// once. Under load batches grow by themselves, so the number of write system
// calls per delivered frame falls exactly when it matters.
//
// # The delivery ledger
//
// Every message frame (frame.SetMessage) handed to a connection ends as
// written whole or dropped for a reason (slow consumer, connection closed,
// shutdown); until then it is pending in the connection's queue (Counters).
//
// # What may block
//
// Nothing on the shard goroutine blocks on a connection: TryWrite is
// non-blocking and a full queue evicts. Posting a command blocks while the
// inbox is full (the engine's coordinator relies on that for back-pressure);
// callbacks (OnChannel, OnRemove) run on the shard goroutine and must not
// block.
package shard
