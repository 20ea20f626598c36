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
//     put the encoded frame on the bounded broadcast queue (Config.BroadcastQueue)
//     and return ErrQueueFull when it is full: the message is dropped and counted,
//     the producer does not wait. Send looks the target up in its shard (one
//     request/reply round trip) and queues the frame on that connection.
//   - The coordinator goroutine blocks only on a full shard inbox, which is what
//     makes the broadcast queue fill and drop under overload.
//   - Each WebSocket connection has one goroutine of its own, its read loop. Hooks
//     (OnConnect, OnMessage, OnDisconnect) and the Authorizer run there: they may
//     block, but only that connection waits. They must not call Shutdown.
//   - Shard maps are touched only by the shard goroutine; other goroutines reach
//     them through request/reply channels (Register returns once the connection is
//     recorded). Counters read elsewhere are atomics.
//   - A connection's outbound queue is guarded by its own mutex; writes never
//     block the caller. A write the socket cannot take now goes to a drain
//     goroutine started for that connection and gone once its queue is empty. A
//     queue past Config.ConnQueueMessages or ConnQueueBytes evicts the connection
//     (close 1013, shardhub_forced_disconnects_total).
//   - Shutdown is idempotent: it refuses new upgrades, sends close 1001 to every
//     connection, lets the shards serve requests during the grace window, closes
//     what is left, waits for the read goroutines, and closes the Broker last.
//
// docs/architecture.md draws the data path and the ownership table.
package engine
