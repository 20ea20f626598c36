package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
	"github.com/shardhub/shardhub/loadtest"
	"github.com/shardhub/shardhub/loadtest/report"
)

// RealOptions configures the real-socket benchmark (`shardhub bench --real`).
type RealOptions struct {
	// Conns is the number of loopback WebSocket connections. Zero means 19,000,
	// about what one process can hold under a 20,000 open-files limit.
	Conns int `json:"conns"`
	// Shards is the engine's shard count. Zero means the engine default.
	Shards int `json:"shards"`
	// Rate is the broadcasts per second offered in each phase. Zero means 100.
	Rate int `json:"rate"`
	// Duration is the length of each measured phase. Zero means 5s.
	Duration time.Duration `json:"duration"`
	// Payload is the broadcast payload size in bytes. Zero means 64.
	Payload int `json:"payload_bytes"`
	// Workers is the number of client processes. Zero means one per 9,500
	// connections.
	Workers int `json:"workers"`
	// SourceIPs are the client source addresses, a range like 127.0.0.2-127.0.0.9.
	SourceIPs string `json:"source_ips"`
	// CPUProfile, when set, is a file for a CPU profile of the server process
	// during the shardhub phase.
	CPUProfile string `json:"-"`
	// MemProfile, when set, is a file for a heap profile of the server process
	// with every connection open and idle (sampling every allocation: slower).
	MemProfile string `json:"-"`
	// ClientCommand starts one client worker process, which must run
	// loadtest.ServeWorker: the clients are the load generator's. Nil means
	// this executable with the arguments `loadtest --worker`.
	ClientCommand []string `json:"-"`
	// Progress, when set, receives one line per step.
	Progress func(format string, args ...any) `json:"-"`
}

func (o *RealOptions) defaults() {
	if o.Conns <= 0 {
		o.Conns = 19_000
	}
	if o.Rate <= 0 {
		o.Rate = 100
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Payload <= 0 {
		o.Payload = 64
	}
	if o.Workers <= 0 {
		o.Workers = (o.Conns + 9_499) / 9_500
	}
	if o.SourceIPs == "" {
		o.SourceIPs = "127.0.0.2-127.0.0.9"
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
}

// Phase names of the real benchmark, in the order they run. The naive hub runs
// last: it drops clients that fall behind, as the design it copies does.
const (
	PhaseShardhub = "shardhub"
	PhaseRaw      = "raw"
	PhaseNaive    = "naive"
)

// PhaseResult is what the clients saw during one phase.
type PhaseResult struct {
	Name        string
	Broadcasts  int64 // broadcasts the server sent
	Expected    int64 // Broadcasts × connections
	Received    int64
	Duplicates  int64
	OutOfOrder  int64
	Elapsed     time.Duration // from the first broadcast until the last delivery
	ServerCPU   time.Duration // user+system CPU of the server process
	Latency     *hdrhistogram.Histogram
	ClientError string
	// Forced and WriteErrors are the engine's slow-consumer evictions and write
	// failures during the phase (shardhub phase only).
	Forced, WriteErrors int64
}

// DeliveriesPerSec is the delivery rate over the phase.
func (p *PhaseResult) DeliveriesPerSec() float64 { return float64(p.Received) / p.Elapsed.Seconds() }

// ServerNsPerDelivery is the server CPU per delivered message.
func (p *PhaseResult) ServerNsPerDelivery() float64 {
	if p.Received == 0 {
		return 0
	}
	return float64(p.ServerCPU.Nanoseconds()) / float64(p.Received)
}

// RealResult is one real-socket run.
type RealResult struct {
	Started           time.Time
	Elapsed           time.Duration // the whole run, connecting included
	Conns             int
	Shards            int
	HeapPerConn       float64 // Go heap per idle connection
	StackPerConn      float64 // goroutine stacks per idle connection
	RSSPerConn        float64 // resident set growth per idle connection
	KernelPerConn     float64 // kernel memory per connection, both ends (slab + TCP buffers), when readable
	GoroutinesPerConn float64
	Phases            []*PhaseResult
}

// Phase returns the named phase, or nil.
func (r *RealResult) Phase(name string) *PhaseResult {
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// outcome judges the run: shardhub and the raw ceiling must deliver every
// message (the naive hub drops slow clients by design), and the headline is
// shardhub against both.
func (r *RealResult) outcome() *report.Outcome {
	o := &report.Outcome{Pass: true}
	for _, name := range []string{PhaseShardhub, PhaseRaw} {
		if p := r.Phase(name); p != nil && p.Received < p.Expected {
			o.Pass = false
			o.Failures = append(o.Failures, fmt.Sprintf("%s delivered %d of %d messages", name, p.Received, p.Expected))
		}
	}
	sh, raw, naive := r.Phase(PhaseShardhub), r.Phase(PhaseRaw), r.Phase(PhaseNaive)
	if !o.Pass {
		o.Summary = "FAIL: deliveries were lost"
		return o
	}
	o.Summary = "PASS: every message delivered"
	if sh != nil && raw != nil && raw.Received > 0 {
		o.Summary += fmt.Sprintf("; shardhub at %.2f of the raw write ceiling's deliveries/s", sh.DeliveriesPerSec()/raw.DeliveriesPerSec())
	}
	if sh != nil && naive != nil && naive.Received > 0 {
		o.Summary += fmt.Sprintf(", %.2f× the naive hub's", sh.DeliveriesPerSec()/naive.DeliveriesPerSec())
	}
	return o
}

// capture is an http.ResponseWriter whose Hijack records the connection, so
// the benchmark can write to the very sockets the engine serves.
type capture struct {
	http.ResponseWriter
	rec func(net.Conn)
}

func (c capture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := c.ResponseWriter.(http.Hijacker).Hijack()
	if err == nil {
		c.rec(conn)
	}
	return conn, brw, err
}

// RunReal runs the real-socket benchmark: it serves o.Conns loopback WebSocket
// connections with the engine, measures their idle memory, then broadcasts to the
// same sockets through the engine, the raw write ceiling and the naive hub.
func RunReal(o RealOptions) (*RealResult, error) {
	o.defaults()
	started := time.Now()
	if o.MemProfile != "" {
		runtime.MemProfileRate = 1 // before the first connection: an exact profile
	}
	e, err := engine.New(engine.Config{Shards: o.Shards, Logger: quiet(), PingInterval: -1, InboundRate: -1})
	if err != nil {
		return nil, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	}()
	sourceIPs, err := loadtest.ParseSourceIPs(o.SourceIPs)
	if err != nil {
		return nil, err
	}
	conns := make([]net.Conn, 0, o.Conns) // allocated before the memory baseline
	var connsMu sync.Mutex
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.ServeHTTP(capture{w, func(c net.Conn) {
			connsMu.Lock()
			conns = append(conns, c)
			connsMu.Unlock()
		}}, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	// The clients are the load generator's, in worker processes, so that the
	// memory measured below is the server's alone. The fleet allocates its
	// bookkeeping before the baseline.
	fleet, err := loadtest.NewFleet(loadtest.Config{
		URLs:            []string{"ws://" + ln.Addr().String() + "/ws"},
		Conns:           o.Conns,
		RampRate:        -1, // as fast as DialConcurrency allows
		DialConcurrency: 64,
		ConnectTimeout:  10 * time.Second,
		SourceIPs:       sourceIPs,
		ReadBufferSize:  4096,
		ReadyMatch:      "-", // the phases start once the engine holds every connection
		WorkerCommand:   o.ClientCommand,
		Logger:          quiet(),
	}, o.Workers)
	if err != nil {
		return nil, err
	}
	scratch := loadtest.NewHistogram()

	settle()
	heap0, stack0, _ := readMem()
	rss0, kern0, g0 := readRSS(), readKernelMem(), runtime.NumGoroutine()

	defer func() { _, _ = fleet.Stop(scratch, scratch) }()
	if err := openClients(fleet, o.Conns); err != nil {
		return nil, err
	}
	o.Progress("%d connections open in %d worker process(es)", o.Conns, o.Workers)
	for deadline := time.Now().Add(time.Minute); e.Connections() < o.Conns; {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: the engine holds %d of %d connections after a minute", e.Connections(), o.Conns)
		}
		time.Sleep(50 * time.Millisecond) // the last registrations are in flight
	}
	time.Sleep(time.Second)
	settle()
	heap1, stack1, _ := readMem()
	rss1, kern1, g1 := readRSS(), readKernelMem(), runtime.NumGoroutine()
	n := float64(o.Conns)
	res := &RealResult{
		Started:           started,
		Conns:             o.Conns,
		Shards:            e.NumShards(),
		HeapPerConn:       float64(int64(heap1)-int64(heap0)) / n,
		StackPerConn:      float64(int64(stack1)-int64(stack0)) / n,
		RSSPerConn:        float64(int64(rss1)-int64(rss0)) / n,
		GoroutinesPerConn: float64(g1-g0) / n,
	}
	if kern0 >= 0 && kern1 >= 0 {
		res.KernelPerConn = float64(kern1-kern0) / n
	}
	if o.MemProfile != "" {
		if err := writeHeapProfile(o.MemProfile); err != nil {
			return res, err
		}
	}
	o.Progress("idle: heap %.0f B + stacks %.0f B per connection, RSS %.0f B, kernel %.0f B",
		res.HeapPerConn, res.StackPerConn, res.RSSPerConn, res.KernelPerConn)

	if _, err := fleet.Mark(); err != nil { // count every connection's deliveries from now on
		return res, err
	}
	connsMu.Lock()
	sockets := append([]net.Conn(nil), conns...)
	connsMu.Unlock()
	modes := []struct {
		name string
		make func() broadcaster
	}{
		{PhaseShardhub, func() broadcaster { return engineMode{e} }},
		{PhaseRaw, func() broadcaster { return newRawCeiling(sockets, runtime.GOMAXPROCS(0)) }},
		{PhaseNaive, func() broadcaster { return newNaiveHub(sockets) }},
	}
	for i, m := range modes {
		before := e.Stats()
		stopProfile := func() {}
		if m.name == PhaseShardhub && o.CPUProfile != "" {
			if stopProfile, err = startCPUProfile(o.CPUProfile); err != nil {
				return res, err
			}
		}
		p, err := runPhase(o, fleet, i+1, m.name, m.make())
		stopProfile()
		if err != nil {
			return res, fmt.Errorf("bench: phase %s: %w", m.name, err)
		}
		if m.name == PhaseShardhub {
			after := e.Stats()
			p.Forced, p.WriteErrors = after.Forced-before.Forced, after.WriteErrors-before.WriteErrors
		}
		res.Phases = append(res.Phases, p)
		o.Progress("%-8s %10.0f deliveries/s, p99 %v, received %d of %d, server CPU %.0f ns/delivery", p.Name,
			p.DeliveriesPerSec(), time.Duration(p.Latency.ValueAtQuantile(99))*time.Microsecond, p.Received, p.Expected, p.ServerNsPerDelivery())
	}
	res.Elapsed = time.Since(started)
	return res, nil
}

// MarshalJSON writes o with its duration as a string such as "5s".
func (o RealOptions) MarshalJSON() ([]byte, error) {
	type plain RealOptions
	return json.Marshal(struct {
		plain
		Duration report.Duration `json:"duration"`
	}{plain(o), report.Duration(o.Duration)})
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// engineMode broadcasts through the shardhub engine.
type engineMode struct{ e *engine.Engine }

func (m engineMode) broadcast(payload []byte) {
	for errors.Is(m.e.Broadcast(payload), engine.ErrQueueFull) {
		time.Sleep(100 * time.Microsecond) // the queue is bounded; never drop in a benchmark
	}
}
func (engineMode) stop() {}

// openClients starts the fleet and waits until every dial has finished; it
// fails unless every connection opened.
func openClients(fleet *loadtest.Fleet, conns int) error {
	if err := fleet.Start(context.Background()); err != nil {
		return err
	}
	for !fleet.Counts().DialsDone {
		time.Sleep(20 * time.Millisecond) // each dial is bounded by its connect timeout
	}
	if c := fleet.Counts(); c.Connected < int64(conns) {
		return fmt.Errorf("bench: %d of %d client connections opened (failures: %v)", c.Connected, conns, c.Errors)
	}
	return nil
}

// Bounds on collecting a phase: the clients have received everything, or
// nothing arrived for phaseIdle, or phaseLimit passed since the last broadcast.
const (
	phaseIdle  = 2 * time.Second
	phaseLimit = 2 * time.Minute
)

// runPhase offers o.Rate broadcasts per second for o.Duration through b, then
// collects what the clients received. Each phase publishes as its own
// publisher (id), so the clients track its sequence afresh.
func runPhase(o RealOptions, fleet *loadtest.Fleet, id int, name string, b broadcaster) (*PhaseResult, error) {
	base := fleet.Drain(loadtest.NewHistogram(), loadtest.NewHistogram()) // samples from before the phase are not its own
	cpu0 := loadtest.CPUTime()
	start := time.Now()
	interval := time.Second / time.Duration(o.Rate)
	payload := make([]byte, 0, o.Payload+64)
	var sent int64
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= o.Duration {
			break
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		payload = loadtest.AppendPayload(payload[:0], uint32(id), 0, uint64(i+1), o.Payload)
		b.broadcast(payload)
		sent++
	}
	b.stop()
	p := &PhaseResult{Name: name, Broadcasts: sent, Expected: sent * int64(o.Conns), Latency: loadtest.NewHistogram()}
	deadline := time.Now().Add(phaseLimit)
	prev, idle := int64(-1), time.Now()
	for {
		got := fleet.Counts().Unique - base.Unique
		if got >= p.Expected || time.Now().After(deadline) {
			break
		}
		if got != prev {
			prev, idle = got, time.Now()
		} else if time.Since(idle) > phaseIdle {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	end := fleet.Drain(p.Latency, loadtest.NewHistogram())
	p.ServerCPU = loadtest.CPUTime() - cpu0
	p.Received = end.Unique - base.Unique
	p.Duplicates = end.Duplicates - base.Duplicates
	p.OutOfOrder = end.OutOfOrder - base.OutOfOrder
	if dropped := end.Dropped - base.Dropped; dropped > 0 {
		p.ClientError = fmt.Sprintf("%d connections dropped (client errors so far: %v)", dropped, end.Errors)
	}
	p.Elapsed = time.Unix(0, end.LastDelivery).Sub(start)
	if p.Elapsed <= 0 {
		p.Elapsed = time.Since(start)
	}
	return p, nil
}

// readRSS is this process's resident set size (0 where /proc is missing).
func readRSS() int64 { return int64(server.ReadMemory().RSS) }

// readKernelMem returns the kernel's slab memory plus its TCP buffer memory, in
// bytes (Slab of /proc/meminfo, mem pages of /proc/net/sockstat), or -1. An idle
// socket holds no buffer pages; its cost is slab objects: the socket, inode,
// file, epoll entry. The figure is host-wide, so other activity adds noise.
func readKernelMem() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return -1
	}
	var slab int64 = -1
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Slab:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err == nil {
				slab = kb << 10
			}
		}
	}
	if slab < 0 {
		return -1
	}
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			for i := 0; len(f) > 0 && f[0] == "TCP:" && i+1 < len(f); i++ {
				if f[i] == "mem" {
					if pages, err := strconv.ParseInt(f[i+1], 10, 64); err == nil {
						slab += pages * int64(os.Getpagesize())
					}
				}
			}
		}
	}
	return slab
}

// Report renders r in the shared report schema.
func (r *RealResult) Report(name string, o RealOptions) *report.Report {
	o.defaults()
	rep := report.New(report.KindBench, name)
	rep.Started = r.Started.UTC().Truncate(time.Millisecond)
	rep.DurationSeconds = r.Elapsed.Round(time.Millisecond).Seconds()
	_ = rep.SetConfig(o)
	rep.SetWorkload("mode", "real", "conns", r.Conns, "shards", r.Shards, "rate", o.Rate, "duration", o.Duration,
		"payload_bytes", o.Payload, "workers", o.Workers)
	rep.Outcome = r.outcome()
	rep.AddMetricHelp("conns", float64(r.Conns), "conns", report.Informational, "loopback WebSocket connections, same sockets in every phase")
	rep.AddMetricHelp("shards", float64(r.Shards), "", report.Informational, "engine shards")
	rep.AddMetricHelp("idle_heap_bytes_per_conn", r.HeapPerConn, "B", report.LowerIsBetter, "Go heap per idle connection (runtime/metrics, after GC)")
	rep.AddMetricHelp("idle_stack_bytes_per_conn", r.StackPerConn, "B", report.LowerIsBetter, "goroutine stacks per idle connection")
	rep.AddMetricHelp("idle_go_bytes_per_conn", r.HeapPerConn+r.StackPerConn, "B", report.LowerIsBetter, "heap + stacks per idle connection")
	rep.AddMetricHelp("idle_rss_bytes_per_conn", r.RSSPerConn, "B", report.LowerIsBetter, "resident set growth per idle connection")
	if r.KernelPerConn > 0 {
		rep.AddMetricHelp("idle_kernel_bytes_per_conn", r.KernelPerConn, "B", report.LowerIsBetter, "kernel memory per connection, server and client sockets together (slab + TCP buffers, host-wide)")
	}
	rep.AddMetricHelp("goroutines_per_conn", r.GoroutinesPerConn, "", report.LowerIsBetter, "goroutines per idle connection")
	for _, p := range r.Phases {
		pre := p.Name + "_"
		rep.AddMetricHelp(pre+"deliveries_per_sec", p.DeliveriesPerSec(), "msg/s", report.HigherIsBetter, "messages received by the clients per second")
		rep.AddMetricHelp(pre+"loss_ratio", 1-float64(p.Received)/float64(max(p.Expected, 1)), "", report.LowerIsBetter, "share of broadcast × connection deliveries not received")
		rep.AddMetricHelp(pre+"latency_p50_ms", float64(p.Latency.ValueAtQuantile(50))/1000, "ms", report.LowerIsBetter, "send to receive")
		rep.AddMetricHelp(pre+"latency_p99_ms", float64(p.Latency.ValueAtQuantile(99))/1000, "ms", report.LowerIsBetter, "send to receive")
		rep.AddMetricHelp(pre+"latency_max_ms", float64(p.Latency.Max())/1000, "ms", report.LowerIsBetter, "send to receive")
		rep.AddMetricHelp(pre+"server_cpu_ns_per_delivery", p.ServerNsPerDelivery(), "ns", report.LowerIsBetter, "server process CPU per delivered message")
		if p.ClientError != "" {
			rep.Notef("%s: a client reported: %s", p.Name, p.ClientError)
		}
		if p.Forced > 0 || p.WriteErrors > 0 {
			rep.Notef("%s: the engine evicted %d slow consumers and closed %d connections on write errors", p.Name, p.Forced, p.WriteErrors)
		}
		if p.OutOfOrder > 0 || p.Duplicates > 0 {
			rep.Notef("%s: %d out of order, %d duplicates", p.Name, p.OutOfOrder, p.Duplicates)
		}
	}
	sh, raw, naive := r.Phase(PhaseShardhub), r.Phase(PhaseRaw), r.Phase(PhaseNaive)
	if sh != nil && raw != nil && raw.Received > 0 {
		rep.AddMetricHelp("efficiency_vs_raw", sh.DeliveriesPerSec()/raw.DeliveriesPerSec(), "ratio", report.HigherIsBetter, "shardhub deliveries/s ÷ raw batching ceiling deliveries/s, same sockets, same run")
		if sh.ServerNsPerDelivery() > 0 {
			rep.AddMetricHelp("cpu_efficiency_vs_raw", raw.ServerNsPerDelivery()/sh.ServerNsPerDelivery(), "ratio", report.HigherIsBetter, "raw ceiling server CPU per delivery ÷ shardhub's")
		}
	}
	if sh != nil && naive != nil && naive.Received > 0 {
		rep.AddMetricHelp("speedup_vs_naive", sh.DeliveriesPerSec()/naive.DeliveriesPerSec(), "ratio", report.HigherIsBetter, "shardhub deliveries/s ÷ naive single-hub deliveries/s")
	}
	if sh != nil {
		rep.Latency = report.LatencyFromHistogram(sh.Latency, "us")
	}
	return rep
}
