// Package redisbroker links shardhub engines on several processes or hosts into
// one cluster through Redis: an engine.Broker, engine.Router,
// engine.HistoryBroker and engine.LedgerBroker on github.com/redis/go-redis/v9.
//
// What it does, and with which Redis data (every name starts with
// Config.Prefix, "ws:" by default):
//
//	ws:ch:<channel>          pub/sub channel of a shardhub channel; this instance
//	                         SUBSCRIBEs while it has local subscribers (lazily)
//	ws:broadcast             pub/sub channel of cluster-wide broadcasts
//	ws:inst:<instance>       pub/sub channel of one instance: private messages
//	ws:sync                  pub/sub channel of sync requests (seq.go)
//	ws:probe:<instance>:<i>  liveness probe of subscriber connection i
//	ws:conn:<conn id>        string → instance holding the connection (TTL)
//	ws:instance:<instance>   string, JSON heartbeat with the connection count (TTL)
//	ws:instances             sorted set of instance ids by last heartbeat
//	ws:hist:<channel>        stream: the channel's history, when a rule enables it
//
// Every pub/sub payload is an envelope (envelope.go) carrying the publishing
// instance's id, so an instance skips its own publications when Redis echoes
// them back (the engine has already delivered them locally), and, on
// publications and broadcasts, the publisher's sequence number on the
// channel, so a receiver knows exactly what it missed (seq.go).
//
// # The ledger
//
// Every message Publish or Broadcast takes is in the broker's ledger
// (Broker.Ledger, engine.BrokerLedger): Handed = Published + Σ Dropped +
// Backlog at any quiescent moment.
// Publish returns nil once the message is queued in the backlog: it will be
// published, in order, or counted dropped with a reason (shutdown; a history
// publication Redis refused for good). It returns an error, and counts the
// message dropped at once, past the backlog bounds (ErrQueueFull, reason
// backlog_overflow), without a backlog while Redis is down (ErrUnavailable,
// broker_unavailable) and after Close (ErrClosed, shutdown). A message that
// timed out in Redis (frozen, paused, busy) stays in the backlog and is sent
// again: receivers drop the copy if the first one arrived. On the receiving
// side, Received counts what was handed to the engine and Lost what sequence
// numbers show missing (engine.DropBrokerLost: they were accepted, and are
// counted, by the instances that published them).
//
// # Concurrency
//
// All exported methods are safe for concurrent use. The methods the engine
// calls on its hot paths (Publish, Broadcast, Subscribe, Unsubscribe,
// ConnAdded, ConnRemoved) never wait for the network: they update in-memory
// state or put the message in a bounded queue, and return. Locate, SendTo,
// Hold, History and Instances do round trips and take a context.
//
// Goroutines, all started by Start and stopped by Close:
//
//   - per subscriber connection (Config.PubSubConns): a controller that dials,
//     (re)subscribes, applies subscription changes and reconnects with
//     backoff; while connected, a reader that decodes, checks sequence
//     numbers and queues what it read (it never calls the engine, so a slow
//     engine cannot stall the connection or fail its probe); and a worker
//     that hands the queue to the engine, in order. The queue between reader
//     and worker is bounded (Config.HandoffQueue); a message that finds it
//     full is dropped and counted lost;
//   - one writer per backlog share (Config.Writers): sends what is queued in
//     pipelined batches, in order, and keeps what Redis did not answer;
//   - the registry loop: writes added and removed connections, refreshes their
//     TTLs in pipelined batches, heartbeats, and rewrites everything at once
//     when Redis comes back;
//   - the monitor: pings Redis while it is down, brings the cluster path back
//     (subscriptions confirmed, the other instances waited for), declares
//     silent subscriber connections dead, and accounts outage time;
//   - the prober: publishes a probe on every subscriber connection each
//     ProbeInterval.
//
// Lock order (A → B: B may be taken while holding A, never the opposite):
// engine locks (chanMu, history gates) → subConn.mu → tracker.mu. writer.mu,
// handoffQueue.mu, registry.mu and Broker.logMu are leaves. No broker lock is
// held while calling the engine.
package redisbroker
