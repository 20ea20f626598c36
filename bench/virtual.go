// Package bench measures shardhub: Go benchmarks over virtual (in-memory)
// connections, the million-connection run behind `shardhub bench --virtual`, and
// the real-socket comparison behind `make bench-real`. The real-socket clients
// are the load generator's (loadtest.Fleet); what is bench's own is the server
// side: the raw write() ceiling, the naive hub baseline, the virtual
// connections, and the reports.
//
// A virtual connection is an engine connection whose transport is a counting
// sink: frames are accepted at once and only counted, so what is measured is the
// engine (routing, coordinator, shards, queues, frame handling) and nothing else.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/shardhub/shardhub/engine"
)

// ErrIncomplete is returned when a delivery did not reach every connection in time.
var ErrIncomplete = errors.New("bench: delivery did not reach every connection")

// CountingSink is the transport of the virtual connections of one shard. It
// counts the frames written and signals when a target count is reached, which is
// how the fleet knows that a broadcast has reached its last connection.
//
// Only its shard's goroutine writes to it (attached connections have no read
// side, and a sink never makes a drain goroutine necessary), so it counts with
// plain integers: an atomic add per write would be a memory fence on every
// delivery and would measure the sink, not the engine. The counts are published
// atomically when the target is reached, and read only then.
type CountingSink struct {
	_         [64]byte // keeps each shard's sink on its own cache lines
	frames    int64    // written by the shard goroutine only
	bytes     int64    // written by the shard goroutine only
	target    atomic.Int64
	published atomic.Int64 // frames, as of the last signal
	done      chan struct{}
	_         [64]byte
}

func newCountingSink() *CountingSink {
	s := &CountingSink{done: make(chan struct{}, 1)}
	s.target.Store(-1)
	return s
}

// TryWrite counts bufs as written.
func (s *CountingSink) TryWrite(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	s.bytes += int64(n)
	s.frames += int64(len(bufs))
	if s.frames == s.target.Load() {
		s.published.Store(s.frames)
		s.done <- struct{}{}
	}
	return n, nil
}

// Write counts bufs as written.
func (s *CountingSink) Write(bufs [][]byte, _ time.Time) (int, error) { return s.TryWrite(bufs) }

// Close does nothing: the sink is shared by the shard's virtual connections.
func (s *CountingSink) Close() error { return nil }

// Frames returns the frames written as of the last completed wait.
func (s *CountingSink) Frames() int64 { return s.published.Load() }

// Fleet is an engine with virtual connections attached, one counting sink per
// shard.
type Fleet struct {
	Engine   *engine.Engine
	Conns    []*engine.Conn
	sinks    []*CountingSink
	perShard []int64 // connections per shard
	waiting  []int   // reused by expect, so a measured broadcast allocates nothing here
	timer    *time.Timer
	// Registered is how long attaching the connections took.
	Registered time.Duration
}

// NewFleet starts an engine with cfg and attaches n virtual connections.
func NewFleet(cfg engine.Config, n int) (*Fleet, error) {
	cfg.PingInterval = -1 // virtual connections have no read side to answer pings
	e, err := engine.New(cfg)
	if err != nil {
		return nil, err
	}
	f := &Fleet{Engine: e, Conns: make([]*engine.Conn, n)}
	f.sinks = make([]*CountingSink, e.NumShards())
	for i := range f.sinks {
		f.sinks[i] = newCountingSink()
	}
	f.perShard = make([]int64, e.NumShards())
	start := time.Now()
	buf := make([]byte, 0, 16)
	for i := range f.Conns {
		id := string(strconv.AppendInt(append(buf[:0], 'v'), int64(i), 10))
		sh := e.ShardOf(id)
		c, err := e.Attach(id, f.sinks[sh])
		if err != nil {
			_ = e.Shutdown(context.Background())
			return nil, fmt.Errorf("bench: attaching connection %d: %w", i, err)
		}
		f.Conns[i] = c
		f.perShard[sh]++
	}
	f.Registered = time.Since(start)
	return f, nil
}

// Frames returns the frames written to all connections so far.
func (f *Fleet) Frames() int64 {
	var n int64
	for _, s := range f.sinks {
		n += s.Frames()
	}
	return n
}

// expect arms every sink to signal once its shard's connections have received
// perConn more frames (perConn for every connection in the shard).
func (f *Fleet) expect(perConn func(shard int) int64) (waitFor []int) {
	waitFor = f.waiting[:0]
	defer func() { f.waiting = waitFor }()
	for i, s := range f.sinks {
		want := perConn(i)
		if want == 0 {
			continue
		}
		select { // clear a stale signal
		case <-s.done:
		default:
		}
		s.target.Store(s.published.Load() + want)
		waitFor = append(waitFor, i)
	}
	return waitFor
}

func (f *Fleet) wait(shards []int, timeout time.Duration) error {
	if f.timer == nil {
		f.timer = time.NewTimer(timeout)
	} else {
		f.timer.Reset(timeout)
	}
	defer f.timer.Stop()
	for _, i := range shards {
		select {
		case <-f.sinks[i].done:
		case <-f.timer.C:
			return fmt.Errorf("%w: shard %d has %d of %d frames", ErrIncomplete, i, f.sinks[i].Frames(), f.sinks[i].target.Load())
		}
	}
	return nil
}

// Broadcast sends data to every connection and returns the time until the last
// one had it.
func (f *Fleet) Broadcast(data []byte) (time.Duration, error) {
	shards := f.expect(func(i int) int64 { return f.perShard[i] })
	start := time.Now()
	if err := f.Engine.Broadcast(data); err != nil {
		return 0, err
	}
	err := f.wait(shards, time.Minute)
	return time.Since(start), err
}

// BroadcastBurst sends k broadcasts back to back and returns the time until the
// last connection had the last one.
func (f *Fleet) BroadcastBurst(data []byte, k int) (time.Duration, error) {
	shards := f.expect(func(i int) int64 { return f.perShard[i] * int64(k) })
	start := time.Now()
	for range k {
		for {
			err := f.Engine.Broadcast(data)
			if err == nil {
				break
			}
			if !errors.Is(err, engine.ErrQueueFull) {
				return 0, err
			}
			time.Sleep(50 * time.Microsecond) // the queue is bounded: wait for room, never drop
		}
	}
	err := f.wait(shards, 5*time.Minute)
	return time.Since(start), err
}

// Subscribe subscribes the first n connections to channel and returns how many
// of them each shard holds.
func (f *Fleet) Subscribe(channel string, n int) ([]int64, error) {
	per := make([]int64, len(f.sinks))
	for _, c := range f.Conns[:n] {
		if _, err := c.Subscribe(channel); err != nil {
			return nil, err
		}
		per[f.Engine.ShardOf(c.ID())]++
	}
	return per, nil
}

// Publish publishes data to channel, whose subscribers per shard are subs, and
// returns the time until the last subscriber had it.
func (f *Fleet) Publish(channel string, data []byte, subs []int64) (time.Duration, error) {
	shards := f.expect(func(i int) int64 { return subs[i] })
	start := time.Now()
	if err := f.Engine.Publish(channel, data); err != nil {
		return 0, err
	}
	err := f.wait(shards, time.Minute)
	return time.Since(start), err
}

// Close shuts the engine down.
func (f *Fleet) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.Engine.Shutdown(ctx)
}

// quiet is the engine logger of benchmarks: their connections come and go by
// design, so the engine's connection logs would only add noise.
func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
