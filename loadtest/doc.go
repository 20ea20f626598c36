// Package loadtest is shardhub's load generator as a library: it opens many
// real WebSocket connections to one or more servers (shardhub or any RFC 6455
// server), publishes through their HTTP API or a publisher connection, and
// measures connects, deliveries, loss, ordering, latency and its own CPU. The
// `shardhub loadtest` command is a thin wrapper; the report it writes is
// package loadtest/report.
//
// # Using it
//
//	res, err := loadtest.Run(ctx, loadtest.Config{
//		URLs:  []string{"ws://127.0.0.1:8080/ws"},
//		Conns: 5000, Rate: 20, Duration: 30 * time.Second,
//	})
//	rep := res.Report("nightly")
//	_ = rep.WriteFile("nightly.json")
//
// Run refuses non-loopback targets unless Config.AllowRemote, and every phase is
// bounded, so a run always ends by itself. A program that sets Config.Workers
// above one must call ServeWorker when it is started as Config.WorkerCommand
// (ServeWorkerFromEnv does it for a program that starts itself). res.Check
// judges a run against Limits, and res.Outcome is the verdict its report shows.
//
// A tool that measures its own server can drive the clients alone: NewFleet
// opens connections (in this process or in worker processes), Mark starts
// counting, Drain and Counts read what arrived, and AppendPayload makes the
// messages they recognise. `shardhub bench --real` does this.
//
// # Concurrency
//
// Run is safe to call from several goroutines (each run is independent) and
// blocks until the run is over. Inside a run:
//
//   - The goroutine that called Run owns the orchestrator: phases, sampling, the
//     time series and the merged histograms. Config.OnProgress is called from it
//     and must not block.
//   - Each connection has one reader that owns its frame parser and its
//     per-stream sequence windows. With Config.IO goroutine the reader is a
//     goroutine of the connection's own; with epoll (the default on Linux) it
//     is one of a few epoll loops (one per GOMAXPROCS), each owning the
//     connections it was handed and its read buffer, and blocking in
//     epoll_wait, never on a connection. Readers record into one of 16
//     statistics shards (atomic counters, a mutex-guarded histogram) chosen
//     by connection index. Writes to a connection (subscribe, pong, close
//     echo) are serialised by the connection's write mutex until the
//     handshake's goroutine hands it over, and are the epoll loop's alone
//     afterwards.
//   - A ramp goroutine per fleet starts dials; at most DialConcurrency
//     handshakes are in flight per process (a bounded semaphore); each dial
//     goroutine becomes the connection's reader (goroutine I/O) or hands the
//     socket to an epoll loop and exits (epoll I/O). Only the loop that holds
//     a socket closes it, or, once every loop has exited, the fleet's stop.
//   - One goroutine per publish target publishes on a fixed schedule; it never
//     queues: when the server is slower than the schedule it falls behind and
//     counts what it could not send.
//   - With workers, one goroutine per worker process reads its JSON reports;
//     the orchestrator talks to the worker over its stdin.
package loadtest
