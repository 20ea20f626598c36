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
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// remoteFleet is a fleet member whose connections a worker process holds
// (see ServeWorker for the protocol). Its reader goroutine keeps the worker's
// latest report.
type remoteFleet struct {
	cfg  Config
	spec workerSpec
	buf  []byte // the reader's line buffer, allocated with the fleet

	cmd   *exec.Cmd
	stdin io.WriteCloser
	wmu   sync.Mutex // serialises writes to stdin

	mu      sync.Mutex // guards the fields below, updated by the reader goroutine.
	latest  Counts
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
		lat:    NewHistogram(),
		conn:   NewHistogram(),
		buf:    make([]byte, 64<<10),
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
	sc.Buffer(r.buf, 64<<20)
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

func (r *remoteFleet) counts() Counts {
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

func (r *remoteFleet) drain(lat, conn *hdrhistogram.Histogram) Counts {
	c := r.counts() // first: the samples of what it counts arrived with it
	r.mu.Lock()
	lat.Merge(r.lat)
	conn.Merge(r.conn)
	r.lat.Reset()
	r.conn.Reset()
	r.mu.Unlock()
	return c
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
