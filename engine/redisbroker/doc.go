// Package redisbroker links shardhub engines on several processes or hosts into
// one cluster through Redis: an engine.Broker, engine.Router and
// engine.HistoryBroker on github.com/redis/go-redis/v9.
//
// What it does, and with which Redis data (every name starts with
// Config.Prefix, "ws:" by default):
//
//	ws:ch:<channel>          pub/sub channel of a shardhub channel; this instance
//	                         SUBSCRIBEs while it has local subscribers (lazily)
//	ws:broadcast             pub/sub channel of cluster-wide broadcasts
//	ws:inst:<instance>       pub/sub channel of one instance: private messages
//	ws:probe:<instance>:<i>  liveness probe of subscriber connection i
//	ws:conn:<conn id>        string → instance holding the connection (TTL)
//	ws:instance:<instance>   string, JSON heartbeat with the connection count (TTL)
//	ws:instances             sorted set of instance ids by last heartbeat
//	ws:hist:<channel>        stream: the channel's history, when a rule enables it
//
// Every pub/sub payload is an envelope (envelope.go) carrying the publishing
// instance's id, so an instance skips its own publications when Redis echoes
// them back: the engine has already delivered them locally.
//
// # Concurrency
//
// All exported methods are safe for concurrent use. The methods the engine
// calls on its hot paths (Publish, Broadcast, Subscribe, Unsubscribe,
// ConnAdded, ConnRemoved) never wait for the network: they update in-memory
// state or put the message on a bounded queue, and return. Locate, SendTo,
// Hold, History and Instances do round trips and take a context.
//
// Goroutines, all started by Start and stopped by Close:
//
//   - one controller per subscriber connection (Config.PubSubConns): dials,
//     (re)subscribes, applies subscription changes, reconnects with backoff;
//     and, while connected, one reader handing messages to the engine;
//   - one writer per publish queue (Config.Writers): sends what is queued in
//     pipelined batches;
//   - the registry loop: writes added and removed connections, refreshes their
//     TTLs in pipelined batches, and heartbeats the instance;
//   - the monitor: probes every subscriber connection, pings Redis while it is
//     unreachable, and accounts outage time.
//
// Lock order: engine locks (chanMu, history gates) → subConn.mu → nothing. No
// broker lock is held while calling the engine.
package redisbroker
