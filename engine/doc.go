// Package engine is shardhub's public API: an embeddable WebSocket fan-out engine.
//
// An Engine hashes each connection to one of N shards (xxhash of the connection
// id, modulo N); each shard is an actor (package shard) whose single goroutine owns
// its connections and channel subscriptions. Broadcast, Publish and Send encode a
// message once into a pooled, reference-counted frame; the fan-out coordinator
// hands that same frame to every shard concerned, and each shard writes it to its
// connections, all the frames pending for one socket in one write.
//
// # Concurrency contract
//
// Every exported method of Engine and Conn is safe for concurrent use.
//
//   - Broadcast, Publish and Send never block on connections. Broadcast and Publish
//     put the encoded frame on a bounded queue (Config.BroadcastQueue; a client's
//     publications have Config.ClientPublishQueue) and return ErrQueueFull when it
//     is full: the message is dropped and counted, the producer does not wait.
//     Send asks the target's shard for the connection (one request/reply round
//     trip, waiting while that shard's inbox is full) and posts the frame without
//     waiting (ErrQueueFull when the inbox is full); a target on another instance
//     is located and reached through a Router broker.
//   - The coordinator goroutine blocks only on a full shard inbox, which is what
//     makes the queues fill and drop under overload.
//   - On Linux, TCP connections are read by a few reactor poller goroutines
//     (Config.ReadPollers), and a connection's messages run on a goroutine that
//     exists only while it has messages waiting; other connections (TLS,
//     ReadPollers < 0, systems without epoll) have one read goroutine each, which
//     runs their messages itself. Either way OnMessage, OnDisconnect and the
//     Authorizer run on the goroutine that runs the connection's messages, one at
//     a time and in order: they may block, but only that connection waits (its
//     reading pauses while 64 messages or 1 MiB wait). OnConnect runs on the
//     upgrade's HTTP handler goroutine. Hooks must not call Shutdown.
//   - Shard maps are touched only by the shard goroutine; other goroutines reach
//     them through request/reply channels (Register returns once the connection is
//     recorded). Counters read elsewhere are atomics.
//   - A connection's outbound queue is guarded by its own mutex, and nothing waits
//     for a socket: the shard writes without blocking, and a write the socket
//     cannot take now goes to a drain goroutine started for that connection and
//     gone once its queue is empty. Conn.Send and the replies to a client wait
//     only while the connection's shard inbox is full. A queue past
//     Config.ConnQueueMessages or ConnQueueBytes evicts the connection (close
//     1013, shardhub_forced_disconnects_total).
//   - Shutdown is idempotent: it refuses new upgrades, sends close 1001 to every
//     connection, lets the shards serve requests during the grace window, closes
//     what is left, waits until every connection's reader has finished, stops the
//     reactor, and closes the Broker last.
//
// docs/architecture.md draws the data path and the ownership table;
// docs/locking.md gives the lock order.
package engine
