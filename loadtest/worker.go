package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Worker processes. With Config.Workers > 1 the orchestrator starts that many
// copies of this program (Config.WorkerCommand) and talks to each over its
// stdin and stdout, one JSON object per line:
//
//	parent → worker  {"spec":{…}}                          first line: the worker's share
//	worker → parent  {"type":"progress","counts":{…},"latency":{…},"connect":{…}}   every 250 ms
//	parent → worker  {"cmd":"mark"}
//	worker → parent  {"type":"marked","subs":[…]}
//	parent → worker  {"cmd":"stop"}                        (or EOF: the parent is gone)
//	worker → parent  {"type":"final","final":{…},"latency":{…},"connect":{…}}
//
// Counters are cumulative; the histograms in each line are the samples since the
// previous line, so the parent's merge is exact. Logs go to stderr.

// workerProgressInterval is how often a worker reports.
const workerProgressInterval = 250 * time.Millisecond

// workerSpec is a worker's share of the run.
type workerSpec struct {
	Config Config  `json:"config"`
	Token  string  `json:"token,omitempty"` // Config.Token is not marshalled
	Index  int     `json:"index"`
	First  int     `json:"first"`
	Count  int     `json:"count"`
	Rate   float64 `json:"rate"`
}

type workerCmd struct {
	Spec *workerSpec `json:"spec,omitempty"`
	Cmd  string      `json:"cmd,omitempty"`
}

type workerMsg struct {
	Type    string      `json:"type"`
	Counts  *Counts     `json:"counts,omitempty"`
	CPU     int64       `json:"cpu_ns,omitempty"`
	Latency *sparseHist `json:"latency,omitempty"`
	Connect *sparseHist `json:"connect,omitempty"`
	Subs    []subCount  `json:"subs,omitempty"`
	Final   *fleetFinal `json:"final,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// WorkerEnv is the environment variable that makes ServeWorkerFromEnv serve:
// a program whose Config.WorkerCommand starts itself passes WorkerEnv+"=1" in
// Config.WorkerEnv.
const WorkerEnv = "SHARDHUB_LOADTEST_WORKER"

// ServeWorkerFromEnv makes this process a load-test worker when WorkerEnv is
// "1" in its environment: it serves ServeWorker on stdin and stdout and exits
// the process (status 1 on failure). Otherwise it returns at once. Call it
// first in main, or in TestMain of a test that re-executes its own binary.
func ServeWorkerFromEnv() {
	if os.Getenv(WorkerEnv) != "1" {
		return
	}
	if err := ServeWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// ServeWorker runs this process as a load-test worker: it reads its share of
// the run from in and reports on out, as described above, until the parent
// says stop, closes in, or ctx is done. The shardhub binary calls it for
// `shardhub loadtest --worker`; a program embedding the load generator with
// Workers > 1 must call it when started as Config.WorkerCommand.
func ServeWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(in)
	var first workerCmd
	if err := dec.Decode(&first); err != nil || first.Spec == nil {
		return fmt.Errorf("%w: reading the spec: %v", ErrWorker, err)
	}
	spec := first.Spec
	cfg := spec.Config
	cfg.Token = spec.Token
	cfg.Logger = nil
	cfg = cfg.withDefaults()

	var wmu sync.Mutex // serialises lines on out
	enc := json.NewEncoder(out)
	send := func(m workerMsg) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = enc.Encode(m)
	}
	limit, _ := RaiseFileLimit()
	if limit > 0 && uint64(spec.Count+fdMargin) > limit {
		err := fmt.Errorf("%w: worker %d: %d connections, open-files limit %d", ErrTooManyConns, spec.Index, spec.Count, limit)
		send(workerMsg{Type: "error", Error: err.Error()})
		return err
	}
	f, err := newProcessFleet(cfg, spec.First, spec.Count, spec.Rate)
	if err != nil {
		send(workerMsg{Type: "error", Error: err.Error()})
		return err
	}
	_ = f.start(ctx)

	var markCPU atomic.Int64
	cmds := make(chan string, 4)
	go func() { // reads commands; EOF or garbage means stop
		for {
			var c workerCmd
			if err := dec.Decode(&c); err != nil {
				cmds <- "stop"
				return
			}
			cmds <- c.Cmd
		}
	}()

	lat, conn := NewHistogram(), NewHistogram()
	report := func() {
		lat.Reset()
		conn.Reset()
		c := f.drain(lat, conn)
		send(workerMsg{Type: "progress", Counts: &c, CPU: int64(CPUTime()), Latency: exportSparse(lat), Connect: exportSparse(conn)})
	}
	tick := time.NewTicker(workerProgressInterval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			report()
		case c := <-cmds:
			switch c {
			case "mark":
				subs, _ := f.mark()
				markCPU.Store(int64(CPUTime()))
				send(workerMsg{Type: "marked", Subs: subs})
			case "stop":
				break loop
			}
		}
	}
	lat.Reset()
	conn.Reset()
	fin, _ := f.stop(lat, conn)
	now := CPUTime()
	fin.CPUTotal = now
	if m := markCPU.Load(); m != 0 {
		fin.CPUMeasured = now - time.Duration(m)
	}
	send(workerMsg{Type: "final", Final: &fin, Latency: exportSparse(lat), Connect: exportSparse(conn)})
	return nil
}
