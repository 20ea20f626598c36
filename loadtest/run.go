package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardhub/shardhub/loadtest/report"
)

// Phases of a run, in order, as Progress.Phase names them.
const (
	PhaseConnect = "connect" // opening connections
	PhaseReady   = "ready"   // waiting for subscriptions and the settle pause
	PhaseMeasure = "measure" // publishing or holding
	PhaseDrain   = "drain"   // waiting for deliveries still in flight
	PhaseDone    = "done"    // closing and collecting
)

// Progress is a snapshot of a running load test, passed to Config.OnProgress
// every Interval.
type Progress struct {
	Phase     string
	Elapsed   time.Duration
	Target    int   // connections asked for
	Open      int64 // connections open now
	Ready     int64
	Failed    int64 // dials and handshakes that failed
	Dropped   int64 // connections lost after connecting
	Published int64 // publish attempts so far
	// PublishFailed counts the publishes that failed (an HTTP answer other
	// than 2xx, a timeout, a failed write).
	PublishFailed int64
	// Deliveries counts first copies received on counted connections.
	Deliveries int64
	// DeliveriesPerSec and the percentiles cover the last interval only.
	DeliveriesPerSec float64
	P50, P99         time.Duration
	// Errors counts every failure so far: the connections' (failed dials,
	// handshakes, drops, close codes) and PublishFailed.
	Errors int64
	// CPU is the load generator's CPU use over the last interval, in cores
	// (all its processes).
	CPU float64
}

// Run executes one load test and returns its result. It refuses non-loopback
// targets unless cfg.AllowRemote, always stops by itself (every phase is
// bounded), and when ctx is cancelled it stops publishing, closes every
// connection and still returns the result gathered so far, with Interrupted set.
// An error is returned only when the run could not start.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.checkLoopback(ctx); err != nil {
		return nil, err
	}
	limit, err := RaiseFileLimit()
	if err != nil {
		cfg.Logger.Warn("loadtest: reading the open-files limit", "err", err)
	}
	per := (cfg.Conns + cfg.Workers - 1) / cfg.Workers
	if limit > 0 && uint64(per+fdMargin) > limit {
		return nil, fmt.Errorf("%w: %d per process, limit %d: use --workers %d or more",
			ErrTooManyConns, per, limit, (cfg.Conns+int(limit)-fdMargin-1)/(int(limit)-fdMargin))
	}
	o := &orchestrator{cfg: cfg, start: time.Now()}
	return o.run(ctx)
}

// orchestrator drives a run. All its fields are owned by the goroutine in Run,
// except those of the publishers it starts.
type orchestrator struct {
	cfg    Config
	start  time.Time
	fleet  *Fleet
	pubs   publishers
	probes []*probe
	client *http.Client
	res    *Result

	lat, connH, tickLat *hdrhistogram.Histogram
	last                Counts
	lastT               time.Time
	lastCPU             time.Duration
	phase               string
	subs                map[[2]int]int64
	baseMem             []report.MemorySample
	haveBaseMem         []bool
}

func (o *orchestrator) run(ctx context.Context) (*Result, error) {
	cfg := o.cfg
	o.res = &Result{Config: cfg, Started: o.start, Errors: map[string]int64{}}
	o.res.series.minPeakDT = cfg.Interval.Seconds() / 2
	o.lat, o.connH, o.tickLat = NewHistogram(), NewHistogram(), NewHistogram()
	o.client = &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}
	defer o.client.CloseIdleConnections()
	o.probes = newProbes(cfg, o.client)
	bg := context.WithoutCancel(ctx) // scrapes after an interrupt still run, bounded by their timeouts
	for _, p := range o.probes {
		o.res.Servers = append(o.res.Servers, report.Server{Instance: p.instance, Before: p.scrape(bg)})
		o.res.serverPID = append(o.res.serverPID, p.pid != 0)
		m, ok := p.memory(bg)
		o.baseMem = append(o.baseMem, m)
		o.haveBaseMem = append(o.haveBaseMem, ok)
	}
	if err := o.startFleets(ctx); err != nil {
		o.stopFleets()
		return nil, err
	}
	o.lastT, o.lastCPU = time.Now(), o.cpuNow()
	o.measure(ctx)
	o.finish(bg)
	if ctx.Err() != nil {
		o.res.Interrupted = true
	}
	return o.res, nil
}

func (o *orchestrator) startFleets(ctx context.Context) error {
	workers := o.cfg.Workers
	if workers <= 1 {
		workers = 0 // this process holds the connections
	}
	f, err := NewFleet(o.cfg, workers)
	if err != nil {
		return err
	}
	o.fleet = f
	return f.Start(ctx)
}

// measure runs the phases from connecting to draining; each ends early when
// ctx is cancelled.
func (o *orchestrator) measure(ctx context.Context) {
	cfg := o.cfg
	o.phase = PhaseConnect
	if !o.wait(ctx, cfg.RampTimeout, func(c Counts) bool { return c.DialsDone }) {
		if ctx.Err() != nil {
			return
		}
		o.res.Notes = append(o.res.Notes, fmt.Sprintf("the connection ramp did not finish within %s", cfg.RampTimeout))
	}
	o.res.ConnectSeconds = time.Since(o.start).Seconds()
	o.phase = PhaseReady
	if !o.wait(ctx, cfg.ReadyTimeout, func(c Counts) bool { return c.Ready >= c.Open }) {
		if ctx.Err() != nil {
			return
		}
		c := o.fleet.Counts()
		o.res.Notes = append(o.res.Notes, fmt.Sprintf("%d of %d open connections were not ready after %s and are not counted", c.Open-c.Ready, c.Open, cfg.ReadyTimeout))
	}
	if cfg.Settle > 0 && !o.wait(ctx, cfg.Settle, nil) && ctx.Err() != nil {
		return
	}
	// Publishers connect before the mark so their handshake is not measured.
	if cfg.Scenario == Broadcast || cfg.Scenario == Channels {
		o.pubs = newPublishers(cfg, o.client)
		for _, p := range o.pubs {
			if err := p.connect(ctx); err != nil {
				o.res.Notes = append(o.res.Notes, err.Error())
				o.res.Errors["publisher_connect"]++
			}
		}
	}
	o.subs = map[[2]int]int64{}
	subs, errs := o.fleet.mark()
	for _, err := range errs {
		o.res.Notes = append(o.res.Notes, err.Error())
	}
	for _, s := range subs {
		o.subs[[2]int{s.Target, s.Channel}] += s.N
		o.res.Subscriptions += s.N
	}
	// Every counted connection holds exactly one stream per channel it joined.
	o.res.Counted = o.res.Subscriptions / o.fleet.subsPerConn()
	o.res.markCPU = CPUTime()
	o.res.markT = time.Now()
	since := func(t time.Time) float64 { return round(t.Sub(o.start).Seconds(), 3) }
	for _, p := range o.probes {
		o.res.markServer = append(o.res.markServer, p.scrape(context.WithoutCancel(ctx)))
	}
	o.phase = PhaseMeasure
	switch cfg.Scenario {
	case Broadcast, Channels:
		var done atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.pubs.run(ctx, cfg.Duration)
			done.Store(true)
		}()
		o.wait(ctx, cfg.Duration+max(time.Second, cfg.Duration/10)+cfg.HTTPTimeout+time.Second, func(Counts) bool { return done.Load() })
		wg.Wait()
		t0 := time.Now()
		o.res.MeasureSeconds = t0.Sub(o.res.markT).Seconds()
		o.res.Phases = append(o.res.Phases, report.Span{Name: PhaseMeasure, Start: since(o.res.markT), End: since(t0)})
		o.res.Expected = o.pubs.expected(o.subs)
		if ctx.Err() != nil {
			return
		}
		o.phase = PhaseDrain
		if !o.wait(ctx, cfg.Drain, func(c Counts) bool { return c.Unique >= o.res.Expected }) && ctx.Err() == nil {
			o.res.Notes = append(o.res.Notes, fmt.Sprintf("deliveries still missing after the %s drain", cfg.Drain))
		}
		o.res.DrainSeconds = time.Since(t0).Seconds()
		o.res.Phases = append(o.res.Phases, report.Span{Name: PhaseDrain, Start: since(t0), End: since(time.Now())})
	case Connect, Idle:
		if cfg.Duration > 0 {
			o.wait(ctx, cfg.Duration, nil)
		}
		o.res.MeasureSeconds = time.Since(o.res.markT).Seconds()
		o.res.Phases = append(o.res.Phases, report.Span{Name: PhaseMeasure, Start: since(o.res.markT), End: since(time.Now())})
	}
}

// wait samples until cond holds (checked every 20ms on cheap counters), d
// passes, or ctx is done; it reports whether cond held. A nil cond waits d.
func (o *orchestrator) wait(ctx context.Context, d time.Duration, cond func(Counts) bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	tick := time.NewTicker(o.cfg.Interval)
	defer tick.Stop()
	for {
		if cond != nil && cond(o.fleet.Counts()) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return cond == nil
		case <-tick.C:
			o.tick(false)
		case <-poll.C:
		}
	}
}

// cpuNow is the CPU time of every load-generator process so far.
func (o *orchestrator) cpuNow() time.Duration { return CPUTime() + o.fleet.workerCPU() }

// tick samples the fleet: one progress report and one time-series point,
// except for the last, partial interval of a run (final), whose rates cover a
// fraction of an interval in which the run was winding down: drawn, it would
// end every chart in a drop that never happened.
func (o *orchestrator) tick(final bool) {
	now := time.Now()
	c := o.fleet.Drain(o.tickLat, o.connH)
	dt := now.Sub(o.lastT).Seconds()
	if dt <= 0 {
		dt = 1e-9
	}
	cpu := o.cpuNow()
	p := Progress{
		Phase:            o.phase,
		Elapsed:          now.Sub(o.start),
		Target:           o.cfg.Conns,
		Open:             c.Open,
		Ready:            c.Ready,
		Failed:           c.Failed,
		Dropped:          c.Dropped,
		Deliveries:       c.Unique,
		DeliveriesPerSec: float64(c.Unique-o.last.Unique) / dt,
		CPU:              (cpu - o.lastCPU).Seconds() / dt,
	}
	if o.pubs != nil {
		p.Published, p.PublishFailed = o.pubs.sent()
	}
	p.Errors = p.PublishFailed
	for _, n := range c.Errors {
		p.Errors += n
	}
	if o.tickLat.TotalCount() > 0 {
		p.P50 = time.Duration(o.tickLat.ValueAtQuantile(50)) * time.Microsecond
		p.P99 = time.Duration(o.tickLat.ValueAtQuantile(99)) * time.Microsecond
		o.lat.Merge(o.tickLat)
		o.tickLat.Reset()
	}
	if !final || dt >= 0.9*o.cfg.Interval.Seconds() {
		o.res.series.add(now.Sub(o.start).Seconds(), p, float64(c.Connected-o.last.Connected)/dt)
	}
	if o.cfg.Scenario == Idle {
		o.sampleMemory(context.Background(), now, c.Open)
	}
	o.last, o.lastT, o.lastCPU = c, now, cpu
	if o.cfg.OnProgress != nil {
		o.cfg.OnProgress(p)
	}
}

// sampleMemory reads every server's memory into the report.
func (o *orchestrator) sampleMemory(ctx context.Context, now time.Time, open int64) {
	for i, p := range o.probes {
		if m, ok := p.memory(ctx); ok {
			m.T = now.Sub(o.start).Seconds()
			m.Conns = open
			o.res.Servers[i].Memory = append(o.res.Servers[i].Memory, m)
		}
	}
}

// finish stops publishing and every fleet, scrapes the servers, and fills the
// result.
func (o *orchestrator) finish(ctx context.Context) {
	o.phase = PhaseDone
	o.tick(true) // the last progress line; a partial interval is left out of the series
	res := o.res
	ownEnd := CPUTime()
	open := o.fleet.Counts().Open
	if o.cfg.Scenario == Idle {
		o.sampleMemory(ctx, time.Now(), open)
	}
	// With --server-pid the server CPU is that of exactly those processes; the
	// /metrics of an address several instances share would count one of them.
	pidCPU := len(o.cfg.ServerPIDs) > 0
	for i, p := range o.probes {
		res.Servers[i].After = p.scrape(ctx)
		if i < len(res.markServer) && (p.pid != 0) == pidCPU {
			res.serverCPU += res.Servers[i].After["process_cpu_seconds_total"] - res.markServer[i]["process_cpu_seconds_total"]
		}
		for path := range p.missing {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: %s not available", p.instance, path))
		}
	}
	for _, p := range o.pubs {
		p.close()
		res.Published += p.sent.Load()
		res.PublishFailed += p.failed.Load()
		res.PublishBehind += p.behind
		for k, v := range p.errs {
			res.Errors[k] += v
		}
		p.rtt.drainInto(o.pubRTT())
	}
	final := o.stopFleets()
	if !res.markT.IsZero() {
		res.LoadgenCPU = ownEnd - res.markCPU + res.workerCPUMeasured
	}
	res.Counts = final
	for k, v := range final.Errors {
		res.Errors[k] += v
	}
	res.Latency = o.lat
	res.Connect = o.connH
	if o.tickLat.TotalCount() > 0 {
		res.Latency.Merge(o.tickLat)
		o.tickLat.Reset()
	}
	for i := range o.probes {
		if o.haveBaseMem[i] {
			res.baseMem = append(res.baseMem, o.baseMem[i])
		} else {
			res.baseMem = append(res.baseMem, report.MemorySample{})
		}
	}
	res.Elapsed = time.Since(o.start)
}

func (o *orchestrator) pubRTT() *hdrhistogram.Histogram {
	if o.res.PublishRTT == nil {
		o.res.PublishRTT = NewHistogram()
	}
	return o.res.PublishRTT
}

// stopFleets stops the fleet and returns its final counts, merging its last
// samples into the run's histograms and its failures into the notes.
func (o *orchestrator) stopFleets() Counts {
	if o.fleet == nil {
		return Counts{}
	}
	fin, errs := o.fleet.stop(o.lat, o.connH)
	for _, err := range errs {
		o.res.Notes = append(o.res.Notes, err.Error())
	}
	o.res.workerCPUMeasured += fin.CPUMeasured
	o.res.workerCPUTotal += fin.CPUTotal
	o.res.loadgenMem = fin.Memory
	return fin.Counts
}
