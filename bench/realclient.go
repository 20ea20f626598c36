package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/shardhub/shardhub/loadtest"
)

// RunClient is a client worker of the real benchmark: it reads commands from in
// (one JSON object per line), holds its share of the connections, and reports on
// out. `shardhub bench --client` runs it in a child process.
func RunClient(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	enc := json.NewEncoder(out)
	var f *clientFleet
	defer func() {
		if f != nil {
			f.close()
		}
	}()
	for sc.Scan() {
		var c clientCmd
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return fmt.Errorf("bench client: bad command: %w", err)
		}
		switch c.Cmd {
		case "connect":
			var err error
			f, err = dialFleet(c)
			if err != nil {
				_ = enc.Encode(clientReport{Error: err.Error()})
				continue
			}
			_ = enc.Encode(clientReport{Connected: len(f.conns)})
		case "phase":
			f.startPhase(c.Phase)
			_ = enc.Encode(clientReport{}) // ready: the server may start sending
		case "end":
			_ = enc.Encode(f.endPhase(c.Phase, c.Expect))
		case "quit":
			return nil
		}
	}
	return sc.Err()
}

// clientFleet is one worker's connections and the phase counters they update.
type clientFleet struct {
	conns []*loadtest.Client
	wg    sync.WaitGroup

	phase      atomic.Int64
	received   atomic.Int64
	duplicates atomic.Int64
	outOfOrder atomic.Int64
	last       atomic.Int64 // unix nanos of the latest delivery
	hists      []lockedHist
	failure    atomic.Value // string: first read error
}

type lockedHist struct {
	mu sync.Mutex // guards h.
	h  *hdrhistogram.Histogram
	_  [40]byte
}

func dialFleet(c clientCmd) (*clientFleet, error) {
	f := &clientFleet{hists: make([]lockedHist, 16)}
	for i := range f.hists {
		f.hists[i].h = newLatencyHist()
	}
	ips := strings.Split(c.SourceIPs, ",")
	conns := make([]*loadtest.Client, c.Conns)
	errs := make(chan error, 1)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ips[i%len(ips)])}}
			conn, err := loadtest.Dial(context.Background(), &d, c.URL, nil, 4096, 10*time.Second)
			if err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			conns[i] = conn
			f.wg.Add(1)
			go f.read(conn, i)
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		for _, conn := range conns {
			if conn != nil {
				conn.Close()
			}
		}
		return nil, err
	default:
	}
	f.conns = conns
	return f, nil
}

func newLatencyHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

// read consumes server messages and accounts for benchmark payloads.
// Runs in its own goroutine per connection.
func (f *clientFleet) read(conn *loadtest.Client, idx int) {
	defer f.wg.Done()
	h := &f.hists[idx%len(f.hists)]
	var curPhase int64
	var lastSeq uint64
	for {
		payload, err := conn.Next()
		if err != nil {
			f.fail(err)
			return
		}
		if ph, seq, ts, ok := parseBenchPayload(payload); ok && int64(ph) == f.phase.Load() {
			now := time.Now().UnixNano()
			if int64(ph) != curPhase {
				curPhase, lastSeq = int64(ph), 0
			}
			switch {
			case seq == lastSeq+1:
				f.received.Add(1)
			case seq <= lastSeq:
				f.duplicates.Add(1)
			default:
				f.received.Add(1)
				f.outOfOrder.Add(1)
			}
			lastSeq = max(lastSeq, seq)
			h.mu.Lock()
			_ = h.h.RecordValue(max((now-ts)/1000, 1))
			h.mu.Unlock()
			for {
				l := f.last.Load()
				if now <= l || f.last.CompareAndSwap(l, now) {
					break
				}
			}
		}
	}
}

func (f *clientFleet) fail(err error) {
	if f.phase.Load() >= 0 {
		f.failure.CompareAndSwap(nil, err.Error())
	}
}

// parseBenchPayload finds "ph", "seq" and "ts" in a frame without decoding JSON.
func parseBenchPayload(p []byte) (ph, seq uint64, ts int64, ok bool) {
	var okPh, okSeq, okTs bool
	ph, okPh = fieldUint(p, `"ph":`)
	seq, okSeq = fieldUint(p, `"seq":`)
	var t uint64
	t, okTs = fieldUint(p, `"ts":`)
	return ph, seq, int64(t), okPh && okSeq && okTs
}

func fieldUint(p []byte, key string) (uint64, bool) {
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return 0, false
	}
	p = p[i+len(key):]
	var v uint64
	n := 0
	for n < len(p) && n < 19 && p[n] >= '0' && p[n] <= '9' {
		v = v*10 + uint64(p[n]-'0')
		n++
	}
	return v, n > 0
}

func (f *clientFleet) startPhase(id int) {
	f.received.Store(0)
	f.duplicates.Store(0)
	f.outOfOrder.Store(0)
	f.last.Store(0)
	for i := range f.hists {
		f.hists[i].mu.Lock()
		f.hists[i].h.Reset()
		f.hists[i].mu.Unlock()
	}
	f.phase.Store(int64(id))
}

// endPhase waits until every expected delivery arrived or deliveries stopped
// arriving for two seconds, then reports the phase.
func (f *clientFleet) endPhase(id int, expect int64) clientReport {
	want := expect * int64(len(f.conns))
	deadline := time.Now().Add(2 * time.Minute)
	prev, idle := int64(-1), time.Now()
	for {
		got := f.received.Load()
		if got >= want || time.Now().After(deadline) {
			break
		}
		if got != prev {
			prev, idle = got, time.Now()
		} else if time.Since(idle) > 2*time.Second {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.phase.Store(-int64(id)) // stop counting
	merged := newLatencyHist()
	for i := range f.hists {
		f.hists[i].mu.Lock()
		merged.Merge(f.hists[i].h)
		f.hists[i].mu.Unlock()
	}
	r := clientReport{
		Received:   f.received.Load(),
		Duplicates: f.duplicates.Load(),
		OutOfOrder: f.outOfOrder.Load(),
		LastNanos:  f.last.Load(),
		Latency:    merged.Export(),
	}
	if v, ok := f.failure.Load().(string); ok {
		r.Error = v
	}
	return r
}

func (f *clientFleet) close() {
	f.phase.Store(-1 << 40)
	for _, c := range f.conns {
		if c != nil {
			c.Close()
		}
	}
	f.wg.Wait()
}
