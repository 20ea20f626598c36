package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
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
	Type    string       `json:"type"`
	Counts  *fleetCounts `json:"counts,omitempty"`
	CPU     int64        `json:"cpu_ns,omitempty"`
	Latency *sparseHist  `json:"latency,omitempty"`
	Connect *sparseHist  `json:"connect,omitempty"`
	Subs    []subCount   `json:"subs,omitempty"`
	Final   *fleetFinal  `json:"final,omitempty"`
	Error   string       `json:"error,omitempty"`
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
	f, err := newLocalFleet(cfg, spec.First, spec.Count, spec.Rate)
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

	lat, conn := newHist(), newHist()
	report := func() {
		lat.Reset()
		conn.Reset()
		c := f.drain(lat, conn)
		send(workerMsg{Type: "progress", Counts: &c, CPU: int64(cpuTime()), Latency: exportSparse(lat), Connect: exportSparse(conn)})
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
				markCPU.Store(int64(cpuTime()))
				send(workerMsg{Type: "marked", Subs: subs})
			case "stop":
				break loop
			}
		}
	}
	lat.Reset()
	conn.Reset()
	fin, _ := f.stop(lat, conn)
	now := cpuTime()
	fin.CPUTotal = now
	if m := markCPU.Load(); m != 0 {
		fin.CPUMeasured = now - time.Duration(m)
	}
	send(workerMsg{Type: "final", Final: &fin, Latency: exportSparse(lat), Connect: exportSparse(conn)})
	return nil
}

// remoteFleet is a fleet held by a worker process.
type remoteFleet struct {
	cfg  Config
	spec workerSpec

	cmd   *exec.Cmd
	stdin io.WriteCloser
	wmu   sync.Mutex // serialises writes to stdin

	mu      sync.Mutex // guards the fields below, updated by the reader goroutine.
	latest  fleetCounts
	cpuNs   int64
	lat     *hdrhistogram.Histogram // samples not yet drained
	conn    *hdrhistogram.Histogram
	failure string // an error line from the worker

	marked chan []subCount
	final  chan fleetFinal
	done   chan struct{} // closed when the reader goroutine exits
}

var _ fleet = (*remoteFleet)(nil)

func newRemoteFleet(cfg Config, index, first, count int, rate float64) *remoteFleet {
	return &remoteFleet{
		cfg:    cfg,
		spec:   workerSpec{Config: cfg, Token: cfg.Token, Index: index, First: first, Count: count, Rate: rate},
		lat:    newHist(),
		conn:   newHist(),
		marked: make(chan []subCount, 1),
		final:  make(chan fleetFinal, 1),
		done:   make(chan struct{}),
	}
}

func (r *remoteFleet) start(ctx context.Context) error {
	argv := r.cfg.WorkerCommand
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("%w: finding this executable: %v", ErrWorker, err)
		}
		argv = []string{exe, "loadtest", "--worker"}
	}
	// Not CommandContext: an interrupted run still asks its workers to stop and
	// report, rather than killing them.
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Env = append(os.Environ(), r.cfg.WorkerEnv...)
	r.cmd.Stderr = os.Stderr
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		return err
	}
	if err := r.cmd.Start(); err != nil {
		close(r.done)
		return fmt.Errorf("%w: starting %s: %v", ErrWorker, argv[0], err)
	}
	go r.read(stdout)
	return r.send(workerCmd{Spec: &r.spec})
}

func (r *remoteFleet) send(c workerCmd) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	b, _ := json.Marshal(c)
	_, err := r.stdin.Write(append(b, '\n'))
	return err
}

// read consumes the worker's reports. Runs in its own goroutine until the
// worker's stdout closes.
func (r *remoteFleet) read(stdout io.Reader) {
	defer close(r.done)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var m workerMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			r.mu.Lock()
			r.failure = fmt.Sprintf("worker %d: bad line: %.80q", r.spec.Index, sc.Text())
			r.mu.Unlock()
			continue
		}
		r.mu.Lock()
		if m.Counts != nil {
			r.latest = *m.Counts
		}
		if m.CPU != 0 {
			r.cpuNs = m.CPU
		}
		m.Latency.mergeInto(r.lat)
		m.Connect.mergeInto(r.conn)
		if m.Type == "error" {
			r.failure = fmt.Sprintf("worker %d: %s", r.spec.Index, m.Error)
		}
		r.mu.Unlock()
		switch m.Type {
		case "marked":
			r.marked <- m.Subs
		case "final":
			if m.Final != nil {
				r.mu.Lock()
				r.latest = m.Final.Counts
				r.mu.Unlock()
				r.final <- *m.Final
			}
		}
	}
}

func (r *remoteFleet) counts() fleetCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.latest
	select {
	case <-r.done:
		c.DialsDone = true // a dead worker dials no more
	default:
	}
	return c
}

// cpu returns the worker's CPU time at its last report.
func (r *remoteFleet) cpu() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Duration(r.cpuNs)
}

func (r *remoteFleet) drain(lat, conn *hdrhistogram.Histogram) fleetCounts {
	r.mu.Lock()
	lat.Merge(r.lat)
	conn.Merge(r.conn)
	r.lat.Reset()
	r.conn.Reset()
	r.mu.Unlock()
	return r.counts()
}

func (r *remoteFleet) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != "" {
		return fmt.Errorf("%w: %s", ErrWorker, r.failure)
	}
	return fmt.Errorf("%w: worker %d exited", ErrWorker, r.spec.Index)
}

func (r *remoteFleet) mark() ([]subCount, error) {
	if err := r.send(workerCmd{Cmd: "mark"}); err != nil {
		return nil, r.err()
	}
	select {
	case subs := <-r.marked:
		return subs, nil
	case <-r.done:
		return nil, r.err()
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("%w: worker %d did not answer mark", ErrWorker, r.spec.Index)
	}
}

func (r *remoteFleet) stop(lat, conn *hdrhistogram.Histogram) (fleetFinal, error) {
	if r.cmd == nil || r.cmd.Process == nil {
		return fleetFinal{}, nil
	}
	_ = r.send(workerCmd{Cmd: "stop"})
	var fin fleetFinal
	var err error
	select {
	case fin = <-r.final:
	case <-r.done:
		select {
		case fin = <-r.final:
		default:
			err = r.err()
			fin.Counts = r.counts()
		}
	case <-time.After(60 * time.Second):
		err = fmt.Errorf("%w: worker %d did not stop in 60s; killed", ErrWorker, r.spec.Index)
		_ = r.cmd.Process.Kill()
		fin.Counts = r.counts()
	}
	_ = r.stdin.Close()
	<-r.done // every line read: the final histograms are merged
	if werr := r.cmd.Wait(); werr != nil && err == nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) || ee.ExitCode() != 0 {
			err = fmt.Errorf("%w: worker %d: %v", ErrWorker, r.spec.Index, werr)
		}
	}
	r.drain(lat, conn)
	return fin, err
}
