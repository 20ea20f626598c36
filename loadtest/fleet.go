package loadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Fleet is the client connections of a run: the one place that opens and
// drives the load generator's connections. Its members hold the connections,
// either in this process (localFleet) or in worker processes (remoteFleet); a
// Fleet drives them all through Start → Mark → Stop and merges what they
// report. Run uses a Fleet, and so does `shardhub bench --real`, which measures
// its own server with the same clients.
//
// Counts may be called from any goroutine; the other methods belong to the
// goroutine that drives the run.
type Fleet struct {
	cfg     Config
	members []fleet
}

// fleet is one member of a Fleet: a set of connections held by this process
// (localFleet) or by a worker process (remoteFleet). A new way of holding
// connections (another I/O model) is another implementation of it.
type fleet interface {
	// start begins opening the member's connections at its ramp rate.
	start(ctx context.Context) error
	// counts returns the cumulative counters, cheaply.
	counts() Counts
	// drain returns the counters, then moves the latency and handshake-time
	// samples recorded so far into lat and conn: every delivery the returned
	// counters include has its latency sample in lat by then.
	drain(lat, conn *hdrhistogram.Histogram) Counts
	// mark freezes which connections are counted (the ready ones) and returns
	// their subscriptions; the measured phase starts after it returns.
	mark() ([]subCount, error)
	// stop closes every connection, drains the last samples into lat and conn
	// and returns the final counters.
	stop(lat, conn *hdrhistogram.Histogram) (fleetFinal, error)
}

// Counts are a fleet's cumulative counters. They travel as JSON from worker
// processes, and add up across fleets.
type Counts struct {
	Attempted  int64 `json:"attempted"`    // dials started
	Connected  int64 `json:"connected"`    // handshakes completed
	Failed     int64 `json:"failed"`       // dials or handshakes that failed
	Ready      int64 `json:"ready"`        // connections ready (subscribed)
	Open       int64 `json:"open"`         // connections open now
	Dropped    int64 `json:"dropped"`      // connections lost before the end
	Lost       int64 `json:"lost"`         // counted connections (see Fleet.Mark) among Dropped
	Received   int64 `json:"received"`     // frames carrying a marker, every copy
	Unique     int64 `json:"unique"`       // first copies on counted connections
	Duplicates int64 `json:"duplicates"`   // further copies
	OutOfOrder int64 `json:"out_of_order"` // first copies older than one already seen
	Ignored    int64 `json:"ignored"`      // marker frames on connections not counted
	Other      int64 `json:"other"`        // frames without a marker (welcome, acks…)
	Bytes      int64 `json:"bytes"`        // payload bytes of marker frames
	// LastDelivery is when the latest first copy arrived, in Unix nanoseconds
	// (0 before the first); merging keeps the latest.
	LastDelivery int64            `json:"last_delivery_ns,omitempty"`
	DialsDone    bool             `json:"dials_done"` // every dial has finished
	Errors       map[string]int64 `json:"errors,omitempty"`
}

func (a *Counts) add(b Counts) {
	a.Attempted += b.Attempted
	a.Connected += b.Connected
	a.Failed += b.Failed
	a.Ready += b.Ready
	a.Open += b.Open
	a.Dropped += b.Dropped
	a.Lost += b.Lost
	a.Received += b.Received
	a.Unique += b.Unique
	a.Duplicates += b.Duplicates
	a.OutOfOrder += b.OutOfOrder
	a.Ignored += b.Ignored
	a.Other += b.Other
	a.Bytes += b.Bytes
	a.LastDelivery = max(a.LastDelivery, b.LastDelivery)
	for k, v := range b.Errors {
		if a.Errors == nil {
			a.Errors = map[string]int64{}
		}
		a.Errors[k] += v
	}
}

// fleetFinal is what a fleet reports when it stops.
type fleetFinal struct {
	Counts Counts `json:"counts"`
	// CPUMeasured is the CPU time of the fleet's process from mark to stop, and
	// CPUTotal over its life; both zero for a fleet in the orchestrator's own
	// process, which measures itself.
	CPUMeasured time.Duration `json:"cpu_measured"`
	CPUTotal    time.Duration `json:"cpu_total"`
	// Memory is what holding the connections cost the fleet's processes
	// (idle scenario only; nil otherwise).
	Memory *fleetMemory `json:"memory,omitempty"`
}

// subCount is how many counted connections of a fleet listen to (target,
// channel): the multiplier of every message published there.
type subCount struct {
	Target  int   `json:"target"`
	Channel int   `json:"channel"`
	N       int64 `json:"n"`
}

// NewFleet prepares the connections of cfg: cfg.Conns connections to cfg.URLs,
// held by this process when workers is 0, else spread evenly over that many
// worker processes (cfg.WorkerCommand, each running ServeWorker). cfg must be
// valid (Config.Validate). NewFleet allocates what the fleet needs and opens
// nothing: a caller measuring its own memory can take its baseline between
// NewFleet and Start.
func NewFleet(cfg Config, workers int) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	rate := max(cfg.RampRate, 0) // negative: as fast as DialConcurrency allows
	f := &Fleet{cfg: cfg}
	if workers <= 0 {
		m, err := newProcessFleet(cfg, 0, cfg.Conns, rate)
		if err != nil {
			return nil, err
		}
		f.members = []fleet{m}
		return f, nil
	}
	if workers > cfg.Conns {
		return nil, fmt.Errorf("%w: Workers: %d worker processes for %d connections", ErrInvalidConfig, workers, cfg.Conns)
	}
	for i := range workers {
		lo, hi := cfg.Conns*i/workers, cfg.Conns*(i+1)/workers
		f.members = append(f.members, newRemoteFleet(cfg, i, lo, hi-lo, rate/float64(workers)))
	}
	return f, nil
}

// newProcessFleet returns the member that holds connections [first,
// first+count) in this process, opened at rate per second: the one place that
// chooses how this process holds connections, for a run without workers and
// for each worker process alike.
func newProcessFleet(cfg Config, first, count int, rate float64) (fleet, error) {
	return newLocalFleet(cfg, first, count, rate)
}

// Start begins opening the connections at cfg.RampRate with at most
// cfg.DialConcurrency handshakes in flight per process; it returns once the
// dials are under way (Counts says how they go: DialsDone once every dial has
// finished). Cancelling ctx stops the dials; the connections stay open until
// Stop. On error, call Stop to release what was started.
func (f *Fleet) Start(ctx context.Context) error {
	for _, m := range f.members {
		if err := m.start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Counts returns the cumulative counters of every connection. With worker
// processes they are as of each worker's last report (every 250 ms).
func (f *Fleet) Counts() Counts {
	var c Counts
	c.DialsDone = true
	for _, m := range f.members {
		mc := m.counts()
		c.add(mc)
		c.DialsDone = c.DialsDone && mc.DialsDone
	}
	return c
}

// Drain returns the counters like Counts, then moves the delivery-latency and
// handshake-time samples (µs, histograms from NewHistogram) recorded since the
// last Drain into lat and connect. Every delivery the returned counters include
// has its latency in lat by then.
func (f *Fleet) Drain(lat, connect *hdrhistogram.Histogram) Counts {
	var c Counts
	c.DialsDone = true
	for _, m := range f.members {
		mc := m.drain(lat, connect)
		c.add(mc)
		c.DialsDone = c.DialsDone && mc.DialsDone
	}
	return c
}

// Mark starts counting: from now on, deliveries on the connections that are
// ready and open count in Counts.Unique (and their latency is recorded), and
// those are the counted connections. It returns how many there are.
func (f *Fleet) Mark() (int64, error) {
	subs, errs := f.mark()
	var n int64
	for _, s := range subs {
		n += s.N
	}
	return n / f.subsPerConn(), errors.Join(errs...)
}

// subsPerConn is how many subscriptions each counted connection holds.
func (f *Fleet) subsPerConn() int64 {
	if f.cfg.Scenario == Channels {
		return int64(f.cfg.SubsPerConn)
	}
	return 1
}

// mark marks every member and returns their subscriptions together with the
// failures of members that did not answer.
func (f *Fleet) mark() ([]subCount, []error) {
	var all []subCount
	var errs []error
	for _, m := range f.members {
		subs, err := m.mark()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		all = append(all, subs...)
	}
	return all, errs
}

// Stop closes every connection, moves the last samples into lat and connect
// and returns the final counters. An error says which worker processes failed;
// the counters then hold what they reported last.
func (f *Fleet) Stop(lat, connect *hdrhistogram.Histogram) (Counts, error) {
	fin, errs := f.stop(lat, connect)
	return fin.Counts, errors.Join(errs...)
}

// stop stops every member in parallel and returns their merged final report
// and failures, merging their last samples into lat and connect.
func (f *Fleet) stop(lat, connect *hdrhistogram.Histogram) (fleetFinal, []error) {
	type out struct {
		fin      fleetFinal
		lat, con *hdrhistogram.Histogram
		err      error
	}
	outs := make([]out, len(f.members))
	var wg sync.WaitGroup
	for i, m := range f.members {
		wg.Go(func() {
			outs[i].lat, outs[i].con = NewHistogram(), NewHistogram()
			outs[i].fin, outs[i].err = m.stop(outs[i].lat, outs[i].con)
		})
	}
	wg.Wait()
	var total fleetFinal
	var errs []error
	for _, x := range outs {
		if x.err != nil {
			errs = append(errs, x.err)
		}
		total.Counts.add(x.fin.Counts)
		total.CPUMeasured += x.fin.CPUMeasured
		total.CPUTotal += x.fin.CPUTotal
		if x.fin.Memory != nil {
			if total.Memory == nil {
				total.Memory = &fleetMemory{}
			}
			total.Memory.add(x.fin.Memory)
		}
		lat.Merge(x.lat)
		connect.Merge(x.con)
	}
	return total, errs
}

// workerCPU is the CPU time the worker processes reported last.
func (f *Fleet) workerCPU() time.Duration {
	var t time.Duration
	for _, m := range f.members {
		if r, ok := m.(*remoteFleet); ok {
			t += r.cpu()
		}
	}
	return t
}
