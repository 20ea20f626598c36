package bench

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/loadtest"
	"github.com/shardhub/shardhub/loadtest/report"
)

// VirtualOptions configures a virtual-connection run (`shardhub bench --virtual`).
type VirtualOptions struct {
	// Conns is the number of virtual connections. Zero means 1,000,000.
	Conns int `json:"conns"`
	// Shards is the engine's shard count. Zero means the engine default.
	Shards int `json:"shards"`
	// Broadcasts is how many single broadcasts are timed. Zero means 50.
	Broadcasts int `json:"broadcasts"`
	// Burst is how many broadcasts the burst phase sends back to back. Zero means 100.
	Burst int `json:"burst"`
	// Payload is the broadcast payload size in bytes. Zero means 64.
	Payload int `json:"payload_bytes"`
	// Progress, when set, receives one line per phase.
	Progress func(format string, args ...any) `json:"-"`
}

func (o *VirtualOptions) defaults() {
	if o.Conns <= 0 {
		o.Conns = 1_000_000
	}
	if o.Broadcasts <= 0 {
		o.Broadcasts = 50
	}
	if o.Burst <= 0 {
		o.Burst = 100
	}
	if o.Payload <= 0 {
		o.Payload = 64
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
}

// VirtualResult is what a virtual run measured.
type VirtualResult struct {
	Started          time.Time
	Elapsed          time.Duration // the whole run, registering included
	Conns            int
	Shards           int
	RegisterDuration time.Duration
	HeapPerConn      float64 // Go heap bytes per connection, after GC
	StackPerConn     float64 // goroutine stack bytes per connection
	Completion       *hdrhistogram.Histogram
	// Single broadcasts: completion time (until the last connection had it).
	P50, P99, Max time.Duration
	// Burst: Burst broadcasts back to back, batched by the shards.
	BurstDuration time.Duration
	BurstFrames   int64
	// AllocsPerBroadcast is the heap allocations per timed broadcast.
	AllocsPerBroadcast float64
}

// NsPerDelivery is the median completion time divided by the connections.
func (r *VirtualResult) NsPerDelivery() float64 {
	return float64(r.P50.Nanoseconds()) / float64(r.Conns)
}

func readMem() (heap, stacks, allocs uint64) {
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/gc/heap/allocs:objects"},
	}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
}

func settle() {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
}

// RunVirtual registers o.Conns virtual connections in one engine and times
// broadcasts that reach all of them.
func RunVirtual(o VirtualOptions) (*VirtualResult, error) {
	o.defaults()
	started := time.Now()
	cfg := engine.Config{Shards: o.Shards, Logger: quiet()}
	settle()
	heap0, stack0, _ := readMem()
	o.Progress("registering %d virtual connections", o.Conns)
	f, err := NewFleet(cfg, o.Conns)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	settle()
	heap1, stack1, _ := readMem()
	res := &VirtualResult{
		Started:          started,
		Conns:            o.Conns,
		Shards:           f.Engine.NumShards(),
		RegisterDuration: f.Registered,
		HeapPerConn:      float64(int64(heap1)-int64(heap0)) / float64(o.Conns),
		StackPerConn:     float64(int64(stack1)-int64(stack0)) / float64(o.Conns),
		Completion:       loadtest.NewHistogram(),
	}
	o.Progress("registered in %v (%.0f/s); heap %.0f B/conn", f.Registered.Round(time.Millisecond),
		float64(o.Conns)/f.Registered.Seconds(), res.HeapPerConn)

	payload := make([]byte, o.Payload)
	for i := range payload {
		payload[i] = 'x'
	}
	copy(payload, `{"bench":1,"p":"`)
	payload[len(payload)-2], payload[len(payload)-1] = '"', '}'
	if _, err := f.Broadcast(payload); err != nil { // warm up pools and caches
		return nil, err
	}
	_, _, allocs0 := readMem()
	times := make([]time.Duration, 0, o.Broadcasts)
	for range o.Broadcasts {
		d, err := f.Broadcast(payload)
		if err != nil {
			return nil, err
		}
		times = append(times, d)
		_ = res.Completion.RecordValue(max(d.Microseconds(), 1))
	}
	_, _, allocs1 := readMem()
	res.AllocsPerBroadcast = float64(allocs1-allocs0) / float64(o.Broadcasts)
	slices.Sort(times)
	res.P50 = times[len(times)/2]
	res.P99 = times[min(len(times)-1, len(times)*99/100)]
	res.Max = times[len(times)-1]
	o.Progress("single broadcasts: p50 %v, p99 %v (%.2f ns/delivery)", res.P50, res.P99, res.NsPerDelivery())

	before := f.Frames()
	d, err := f.BroadcastBurst(payload, o.Burst)
	if err != nil {
		return nil, err
	}
	res.BurstDuration = d
	res.BurstFrames = f.Frames() - before
	o.Progress("burst of %d: %v (%.0f deliveries/s)", o.Burst, d.Round(time.Microsecond), float64(res.BurstFrames)/d.Seconds())
	res.Elapsed = time.Since(started)
	return res, nil
}

// Report renders r in the shared report schema.
func (r *VirtualResult) Report(name string, o VirtualOptions) *report.Report {
	o.defaults()
	rep := report.New(report.KindBench, name)
	rep.Started = r.Started.UTC().Truncate(time.Millisecond)
	rep.DurationSeconds = r.Elapsed.Round(time.Millisecond).Seconds()
	_ = rep.SetConfig(o)
	rep.SetWorkload("mode", "virtual", "conns", r.Conns, "shards", r.Shards, "broadcasts", o.Broadcasts, "burst", o.Burst,
		"payload_bytes", o.Payload)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	rep.AddMetricHelp("conns", float64(r.Conns), "conns", report.Informational, "virtual connections registered")
	rep.AddMetricHelp("shards", float64(r.Shards), "", report.Informational, "engine shards")
	rep.AddMetricHelp("register_per_sec", float64(r.Conns)/r.RegisterDuration.Seconds(), "conns/s", report.HigherIsBetter, "Attach rate, one connection at a time")
	rep.AddMetricHelp("heap_bytes_per_conn", r.HeapPerConn, "B", report.LowerIsBetter, "Go heap per virtual connection after GC")
	rep.AddMetricHelp("stack_bytes_per_conn", r.StackPerConn, "B", report.LowerIsBetter, "goroutine stacks per virtual connection")
	rep.AddMetricHelp("broadcast_completion_p50_ms", ms(r.P50), "ms", report.LowerIsBetter, "time until the last connection had a broadcast (median)")
	rep.AddMetricHelp("broadcast_completion_p99_ms", ms(r.P99), "ms", report.LowerIsBetter, "time until the last connection had a broadcast (p99)")
	rep.AddMetricHelp("broadcast_completion_max_ms", ms(r.Max), "ms", report.LowerIsBetter, "slowest single broadcast")
	rep.AddMetricHelp("ns_per_delivery", r.NsPerDelivery(), "ns", report.LowerIsBetter, "median completion time / connections")
	rep.AddMetricHelp("deliveries_per_sec", float64(r.Conns)/r.P50.Seconds(), "msg/s", report.HigherIsBetter, "single broadcasts, from the median completion time")
	rep.AddMetricHelp("burst_deliveries_per_sec", float64(r.BurstFrames)/r.BurstDuration.Seconds(), "msg/s", report.HigherIsBetter, fmt.Sprintf("%d broadcasts back to back, batched per connection", o.Burst))
	rep.AddMetricHelp("allocs_per_broadcast", r.AllocsPerBroadcast, "allocs", report.LowerIsBetter, "heap allocations per broadcast (whole process)")
	rep.Latency = report.LatencyFromHistogram(r.Completion, "us")
	return rep
}
