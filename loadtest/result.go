package loadtest

import (
	"fmt"
	"runtime"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardhub/shardhub/loadtest/report"
)

// Result is what a run measured. Report turns it into the report document.
type Result struct {
	Config      Config
	Started     time.Time
	Elapsed     time.Duration
	Interrupted bool // the context was cancelled before the run completed

	// Counts are the connections' final counters, merged over all workers.
	Counts Counts
	// Counted is the number of connections whose deliveries count (ready at the
	// start of the measured phase); Subscriptions their (target, channel) pairs.
	Counted, Subscriptions int64
	// Expected is the number of deliveries owed: each accepted publication
	// times the counted connections listening where it was published.
	Expected                                int64
	Published, PublishFailed, PublishBehind int64
	// Latency is end-to-end delivery latency in µs; Connect is dial plus
	// handshake time in µs; PublishRTT is the publish request round trip in µs.
	Latency, Connect, PublishRTT *hdrhistogram.Histogram
	// ConnectSeconds is the connection phase; MeasureSeconds the publishing or
	// holding phase; DrainSeconds the wait for late deliveries.
	ConnectSeconds, MeasureSeconds, DrainSeconds float64
	// Phases are the measured phase and the drain, in seconds since Started.
	Phases []report.Span
	// LoadgenCPU is the CPU time all load-generator processes used during the
	// measured phase and drain.
	LoadgenCPU time.Duration
	// Errors counts failures by kind, connections' and publishers' together.
	Errors  map[string]int64
	Servers []report.Server
	Notes   []string

	series            series
	markT             time.Time
	markCPU           time.Duration
	markServer        []map[string]float64
	serverCPU         float64
	baseMem           []report.MemorySample
	workerCPUMeasured time.Duration
	workerCPUTotal    time.Duration
	loadgenMem        *fleetMemory // idle scenario: what holding the connections cost the load generator
	serverPID         []bool       // Servers[i] is a --server-pid process, not an API base
}

// Loss returns the expected deliveries that did not arrive.
func (r *Result) Loss() int64 { return max(r.Expected-r.Counts.Unique, 0) }

// series accumulates the time series of a run.
type series struct {
	t, open, dps, p50, p99, pubs, cpu, connects []float64
	lastPub                                     int64
	lastT                                       float64
	// peakDPS is the best deliveries/s over intervals at least minPeakDT long:
	// the short last interval of a phase (and worker counts that arrive late)
	// would otherwise show as bogus peaks.
	peakDPS, minPeakDT float64
}

func (s *series) add(t float64, p Progress, connectRate float64) {
	dt := t - s.lastT
	if dt <= 0 {
		dt = 1e-9
	}
	s.t = append(s.t, round(t, 3))
	s.open = append(s.open, float64(p.Open))
	s.dps = append(s.dps, round(p.DeliveriesPerSec, 1))
	if dt >= s.minPeakDT {
		s.peakDPS = max(s.peakDPS, round(p.DeliveriesPerSec, 1))
	}
	s.p50 = append(s.p50, float64(p.P50.Microseconds()))
	s.p99 = append(s.p99, float64(p.P99.Microseconds()))
	s.pubs = append(s.pubs, round(float64(p.Published-s.lastPub)/dt, 1))
	s.cpu = append(s.cpu, round(p.CPU, 3))
	s.connects = append(s.connects, round(connectRate, 1))
	s.lastPub, s.lastT = p.Published, t
}

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5*sign(v))) / p
}

func sign(v float64) float64 {
	if v < 0 {
		return -1
	}
	return 1
}

// Report builds the report document of the run, named name (a generated name
// when empty).
func (r *Result) Report(name string) *report.Report {
	cfg := r.Config
	if name == "" {
		name = fmt.Sprintf("%s-%dconns", cfg.Scenario, cfg.Conns)
	}
	rep := report.New(report.KindLoadtest, name)
	rep.Started = r.Started.UTC().Truncate(time.Millisecond)
	rep.DurationSeconds = round(r.Elapsed.Seconds(), 3)
	_ = rep.SetConfig(cfg)
	r.setWorkload(rep)
	rep.Phases = r.Phases
	c := r.Counts
	H, L, I := report.HigherIsBetter, report.LowerIsBetter, report.Informational

	rep.AddMetricHelp("conns_target", float64(cfg.Conns), "conns", I, "connections asked for")
	rep.AddMetricHelp("conns_connected", float64(c.Connected), "conns", H, "handshakes completed")
	rep.AddMetricHelp("conns_counted", float64(r.Counted), "conns", H, "connections ready when the measured phase began")
	rep.AddMetricHelp("connect_failures", float64(c.Failed), "conns", L, "dials and handshakes that failed")
	rep.AddMetricHelp("conns_dropped", float64(c.Dropped), "conns", L, "connections lost before the end of the run")
	if r.ConnectSeconds > 0 {
		rep.AddMetricHelp("connect_rate", round(float64(c.Connected)/r.ConnectSeconds, 1), "conns/s", H, "handshakes completed per second of the connection phase (bounded by the ramp rate)")
	}
	if r.Connect != nil && r.Connect.TotalCount() > 0 {
		rep.AddMetric("connect_time_p50_ms", ms(r.Connect.ValueAtQuantile(50)), "ms", L)
		rep.AddMetric("connect_time_p99_ms", ms(r.Connect.ValueAtQuantile(99)), "ms", L)
		rep.AddMetric("connect_time_max_ms", ms(r.Connect.Max()), "ms", L)
	}
	measured := r.MeasureSeconds + r.DrainSeconds
	if cfg.Scenario == Broadcast || cfg.Scenario == Channels {
		rep.AddMetricHelp("published", float64(r.Published), "msg", I, "publish attempts")
		rep.AddMetricHelp("publish_failed", float64(r.PublishFailed), "msg", L, "publishes the server refused or that failed")
		rep.AddMetricHelp("publish_behind", float64(r.PublishBehind), "msg", L, "publishes the schedule wanted but the publisher could not make in time")
		rep.AddMetricHelp("deliveries_expected", float64(r.Expected), "msg", I, "accepted publications × counted listeners")
		rep.AddMetricHelp("deliveries", float64(c.Unique), "msg", I, "first copies received on counted connections")
		rep.AddMetricHelp("loss", float64(r.Loss()), "msg", L, "expected deliveries that never arrived")
		loss := 0.0
		if r.Expected > 0 {
			loss = float64(r.Loss()) / float64(r.Expected) * 100
		}
		rep.AddMetricHelp("loss_pct", round(loss, 4), "%", L, "loss in percent of expected")
		rep.AddMetricHelp("duplicates", float64(c.Duplicates), "msg", L, "further copies of a delivered message")
		rep.AddMetricHelp("out_of_order", float64(c.OutOfOrder), "msg", L, "messages older than one already delivered on the same (publisher, channel)")
		if measured > 0 {
			rep.AddMetricHelp("deliveries_per_sec", round(float64(c.Unique)/measured, 1), "msg/s", H, "deliveries over the publishing phase and drain")
		}
		rep.AddMetricHelp("deliveries_per_sec_peak", r.series.peakDPS, "msg/s", H, "best full sampling interval")
		if l := r.Latency; l != nil && l.TotalCount() > 0 {
			rep.AddMetric("latency_p50_us", float64(l.ValueAtQuantile(50)), "us", L)
			rep.AddMetric("latency_p90_us", float64(l.ValueAtQuantile(90)), "us", L)
			rep.AddMetric("latency_p99_us", float64(l.ValueAtQuantile(99)), "us", L)
			rep.AddMetric("latency_p999_us", float64(l.ValueAtQuantile(99.9)), "us", L)
			rep.AddMetric("latency_max_us", float64(l.Max()), "us", L)
			rep.AddMetric("latency_mean_us", round(l.Mean(), 1), "us", L)
		}
		if p := r.PublishRTT; p != nil && p.TotalCount() > 0 {
			rep.AddMetricHelp("publish_rtt_p50_us", float64(p.ValueAtQuantile(50)), "us", L, "publish request round trip (HTTP) or write time (ws)")
			rep.AddMetric("publish_rtt_p99_us", float64(p.ValueAtQuantile(99)), "us", L)
		}
	}
	if r.LoadgenCPU > 0 && measured > 0 {
		rep.AddMetricHelp("loadgen_cpu_seconds", round(r.LoadgenCPU.Seconds(), 3), "s", L, "CPU of all load-generator processes during the measured phase")
		rep.AddMetricHelp("loadgen_cpu_cores", round(r.LoadgenCPU.Seconds()/measured, 3), "cores", L, "average cores the load generator used while measuring")
		if c.Unique > 0 {
			rep.AddMetricHelp("loadgen_cpu_ns_per_delivery", round(float64(r.LoadgenCPU.Nanoseconds())/float64(c.Unique), 1), "ns", L, "load-generator CPU per delivered message")
		}
	}
	var dropped, forced, sent float64
	var haveDropped, haveForced, haveSent bool
	for _, s := range r.Servers {
		if d, ok := s.Delta("shardhub_dropped_broadcasts_total"); ok {
			dropped, haveDropped = dropped+d, true
		}
		if d, ok := s.Delta("shardhub_forced_disconnects_total"); ok {
			forced, haveForced = forced+d, true
		}
		if d, ok := s.Delta("shardhub_messages_sent_total"); ok {
			sent, haveSent = sent+d, true
		}
	}
	if haveDropped {
		rep.AddMetricHelp("server_dropped_broadcasts", dropped, "msg", L, "shardhub_dropped_broadcasts_total during the run, all servers")
	}
	if haveForced {
		rep.AddMetricHelp("server_forced_disconnects", forced, "conns", L, "shardhub_forced_disconnects_total during the run, all servers")
	}
	if haveSent {
		rep.AddMetricHelp("server_messages_sent", sent, "msg", I, "shardhub_messages_sent_total during the run, all servers: publications written to connections")
	}
	if r.serverCPU > 0 {
		rep.AddMetricHelp("server_cpu_seconds", round(r.serverCPU, 3), "s", L, "CPU of all servers during the measured phase (/proc/PID/stat of the --server-pid processes, else their /metrics process_cpu_seconds_total)")
		if c.Unique > 0 {
			rep.AddMetricHelp("server_cpu_ns_per_delivery", round(r.serverCPU*1e9/float64(c.Unique), 1), "ns", L, "server CPU per delivered message")
		}
		if r.LoadgenCPU.Seconds() > r.serverCPU && cfg.Scenario != Idle {
			rep.Notef("the load generator used more CPU (%.2fs) than the servers (%.2fs): on a shared host this run is likely client-bound", r.LoadgenCPU.Seconds(), r.serverCPU)
		}
	}
	if cfg.Scenario == Idle {
		r.idleMetrics(rep)
	}
	if r.Latency != nil {
		rep.Latency = report.LatencyFromHistogram(r.Latency, "us")
	}
	s := r.series
	rep.AddSeries("conns_open", "conns", s.t, s.open)
	if cfg.Scenario == Broadcast || cfg.Scenario == Channels {
		rep.AddSeries("deliveries_per_sec", "msg/s", s.t, s.dps)
		rep.AddSeries("latency_p50_us", "us", s.t, s.p50)
		rep.AddSeries("latency_p99_us", "us", s.t, s.p99)
		rep.AddSeries("published_per_sec", "msg/s", s.t, s.pubs)
	}
	rep.AddSeries("connects_per_sec", "conns/s", s.t, s.connects)
	rep.AddSeries("loadgen_cpu_cores", "cores", s.t, s.cpu)
	if len(r.Errors) > 0 {
		rep.Errors = r.Errors
	}
	rep.Server = r.Servers
	rep.Notes = append(rep.Notes, r.Notes...)
	if r.Interrupted {
		rep.Notef("interrupted: the run was stopped before it completed; counts cover what happened until then")
	}
	if cfg.Workers > 1 {
		rep.Notef("%d worker processes held the connections (%d each)", cfg.Workers, cfg.Conns/cfg.Workers)
	}
	if !cfg.AllowRemote {
		rep.Notef("load generator and servers share this host (%d cores): their CPU use competes", runtime.NumCPU())
	}
	return rep
}

// setWorkload records the settings that define what the run measured, so
// that compare can tell when two runs measured different things.
func (r *Result) setWorkload(rep *report.Report) {
	cfg := r.Config
	rep.SetWorkload("scenario", cfg.Scenario, "conns", cfg.Conns, "targets", len(cfg.URLs), "workers", cfg.Workers,
		"duration", cfg.Duration, "io", cfg.IO)
	switch cfg.Scenario {
	case Broadcast, Channels:
		rep.SetWorkload("rate", cfg.Rate, "size", cfg.Size, "publish", cfg.Publish, "publish_to", cfg.PublishTo)
	case Connect:
		rep.SetWorkload("ramp", cfg.RampRate, "dial_concurrency", cfg.DialConcurrency)
	}
	if cfg.Scenario == Channels {
		rep.SetWorkload("channels", cfg.Channels, "subs_per_conn", cfg.SubsPerConn, "zipf", cfg.Zipf)
		if cfg.Zipf {
			rep.SetWorkload("zipf_s", cfg.ZipfS)
		}
	}
}

// idleMetrics derives the memory per connection of the load generator and of
// the servers from their baseline samples (before connecting) and their last
// samples of the hold.
func (r *Result) idleMetrics(rep *report.Report) {
	if m := r.loadgenMem; m != nil && m.Conns > 0 {
		heap, stack, rss := m.perConn()
		L := report.LowerIsBetter
		rep.AddMetricHelp("loadgen_go_bytes_per_conn", round(heap+stack, 1), "B", L, "load generator: heap in use and goroutine stacks, growth per connection held, all its processes")
		rep.AddMetricHelp("loadgen_heap_bytes_per_conn", round(heap, 1), "B", L, "load generator: heap in use growth per connection")
		rep.AddMetricHelp("loadgen_stack_bytes_per_conn", round(stack, 1), "B", L, "load generator: goroutine stack growth per connection")
		if m.Held.RSS != 0 {
			rep.AddMetricHelp("loadgen_rss_bytes_per_conn", round(rss, 1), "B", L, "load generator: resident memory growth per connection")
		}
	}
	var dHeap, dStack, dGo, dRSS, dG float64
	var have, haveGo bool
	// With --server-pid the RSS is that of exactly those processes, as for
	// the CPU: an API base names the same processes again (or, for instances
	// sharing an address, one of them).
	pidRSS := false
	for _, isPID := range r.serverPID {
		pidRSS = pidRSS || isPID
	}
	for i, s := range r.Servers {
		if len(s.Memory) == 0 || i >= len(r.baseMem) {
			continue
		}
		last, base := s.Memory[len(s.Memory)-1], r.baseMem[i]
		dHeap += float64(last.HeapInuse) - float64(base.HeapInuse)
		dStack += float64(last.StackInuse) - float64(base.StackInuse)
		dGo += float64(last.GoTotal) - float64(base.GoTotal)
		if i >= len(r.serverPID) || r.serverPID[i] == pidRSS {
			dRSS += float64(last.RSS) - float64(base.RSS)
		}
		dG += float64(last.Goroutines) - float64(base.Goroutines)
		have = true
		haveGo = haveGo || last.GoTotal != 0 // the server reports Go memory (/api/stats), not only RSS
	}
	n := float64(r.Counted)
	if !have || n == 0 {
		rep.Notef("no server memory samples: give the servers' /api/stats (shardhub) or --server-pid")
		return
	}
	L := report.LowerIsBetter
	if dRSS != 0 {
		rep.AddMetricHelp("server_rss_bytes_per_conn", round(dRSS/n, 1), "B", L, "resident memory growth per held connection, all servers")
	}
	if haveGo { // zero growth is a result, not a missing reading
		rep.AddMetricHelp("server_go_bytes_per_conn", round(dGo/n, 1), "B", L, "Go runtime memory (all classes) growth per connection")
		rep.AddMetricHelp("server_heap_bytes_per_conn", round(dHeap/n, 1), "B", L, "heap in use growth per connection")
		rep.AddMetricHelp("server_stack_bytes_per_conn", round(dStack/n, 1), "B", L, "goroutine stack growth per connection")
		rep.AddMetricHelp("server_goroutines_per_conn", round(dG/n, 3), "goroutines", L, "goroutines per connection")
	}
}

func ms(us int64) float64 { return round(float64(us)/1000, 3) }
