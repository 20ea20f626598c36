package loadtest

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
)

func TestSparseHistMergeIsExact(t *testing.T) {
	t.Parallel()
	all, merged := NewHistogram(), NewHistogram()
	parts := []*lockedHist{{h: NewHistogram()}, {h: NewHistogram()}, {h: NewHistogram()}}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 100000 {
		v := int64(rng.ExpFloat64() * 2000)
		if i%1000 == 0 {
			v = rng.Int64N(histMax) // the far tail
		}
		recordClamped(all, v)
		parts[i%3].record(v)
	}
	for _, p := range parts {
		tmp := NewHistogram()
		p.drainInto(tmp)
		exportSparse(tmp).mergeInto(merged)
		if p.h.TotalCount() != 0 {
			t.Fatal("drain left samples behind")
		}
	}
	if !merged.Equals(all) {
		t.Errorf("merged histogram differs: %d vs %d samples, p99 %d vs %d",
			merged.TotalCount(), all.TotalCount(), merged.ValueAtQuantile(99), all.ValueAtQuantile(99))
	}
	var nilSparse *sparseHist
	nilSparse.mergeInto(merged) // a nil delta is a no-op
	if exportSparse(NewHistogram()) != nil {
		t.Error("empty histogram exported bins")
	}
}

// TestWorkersMergeExactly runs the same load in three worker processes (this
// test binary re-executed) and checks that the merged result is exact: every
// delivery counted once, histograms holding one sample per delivery, and the
// server's own count agreeing.
func TestWorkersMergeExactly(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		url, _ := startEngine(t, engine.Config{})
		const conns, rate = 60, 20
		res := run(t, Config{
			IO: io, URLs: []string{url}, Conns: conns, Rate: rate, Duration: time.Second,
			ReadyMatch: `"type":"welcome"`, Workers: 3,
			WorkerCommand: []string{os.Args[0]}, WorkerEnv: []string{WorkerEnv + "=1"},
		})
		c := res.Counts
		if c.Connected != conns || res.Counted != conns || c.Attempted != conns {
			t.Fatalf("attempted %d connected %d counted %d, want %d", c.Attempted, c.Connected, res.Counted, conns)
		}
		if res.Published != rate || res.Expected != rate*conns {
			t.Fatalf("published %d expected %d", res.Published, res.Expected)
		}
		if c.Unique != res.Expected || c.Received != c.Unique || c.Duplicates != 0 || c.OutOfOrder != 0 {
			t.Errorf("unique %d received %d dups %d ooo %d, want %d", c.Unique, c.Received, c.Duplicates, c.OutOfOrder, res.Expected)
		}
		if n := res.Latency.TotalCount(); n != c.Unique {
			t.Errorf("merged latency histogram holds %d samples, deliveries %d", n, c.Unique)
		}
		if n := res.Connect.TotalCount(); n != conns {
			t.Errorf("merged handshake histogram holds %d samples", n)
		}
		if c.Open != 0 {
			t.Errorf("%d connections still open after the run", c.Open)
		}
		if res.workerCPUMeasured <= 0 || res.workerCPUTotal <= res.workerCPUMeasured {
			t.Errorf("worker CPU measured %s total %s", res.workerCPUMeasured, res.workerCPUTotal)
		}
		rep := res.Report("")
		if sent := metric(t, rep, "server_messages_sent"); sent != float64(c.Unique) {
			t.Errorf("server wrote %v deliveries, the workers counted %d", sent, c.Unique)
		}
		if metric(t, rep, "loadgen_cpu_ns_per_delivery") <= 0 {
			t.Error("no CPU per delivery")
		}
	})
}

func TestWorkerFailsToStart(t *testing.T) {
	t.Parallel()
	url, _ := startEngine(t, engine.Config{})
	_, err := Run(t.Context(), Config{
		URLs: []string{url}, Conns: 4, Workers: 2, Logger: quietLogger(),
		WorkerCommand: []string{"/nonexistent/shardhub"},
	})
	if err == nil {
		t.Fatal("a run whose workers cannot start succeeded")
	}
}

// TestWorkersReportMemory: in the idle scenario each worker measures what its
// connections cost it, and the report sums the workers.
func TestWorkersReportMemory(t *testing.T) {
	t.Parallel()
	url, _ := startEngine(t, engine.Config{})
	res := run(t, Config{
		Scenario: Idle, URLs: []string{url}, Conns: 20, Duration: 200 * time.Millisecond, Workers: 2,
		WorkerCommand: []string{os.Args[0]}, WorkerEnv: []string{WorkerEnv + "=1"},
	})
	m := res.loadgenMem
	if m == nil || m.Conns != 20 || m.Held.Heap == 0 || m.Base.Heap == 0 || m.Held.RSS == 0 {
		t.Fatalf("load-generator memory %+v", m)
	}
	metric(t, res.Report(""), "loadgen_go_bytes_per_conn")
}
