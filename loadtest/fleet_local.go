package loadtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// statShard aggregates the receive-side counters of a slice of connections;
// sharding keeps readers from contending on one cache line and one lock.
type statShard struct {
	received, unique, dups, ooo, ignored, other, bytes atomic.Int64
	last                                               atomic.Int64 // Unix nanos of the latest first copy
	lat                                                lockedHist
	_                                                  [64]byte // keeps neighbouring shards off one cache line
}

// delivered records a first copy that arrived at now (Unix nanos) after
// travelling latUS microseconds. The latency is recorded before the count, so
// a drain that reads the counters first never misses a counted sample.
func (sh *statShard) delivered(now, latUS int64, late bool) {
	sh.lat.record(latUS)
	if late {
		sh.ooo.Add(1)
	}
	sh.unique.Add(1)
	for {
		l := sh.last.Load()
		if now <= l || sh.last.CompareAndSwap(l, now) {
			return
		}
	}
}

// localFleet is a fleet member whose connections this process holds: conns
// [first, first+count) of the run, opened at rate per second (0: as fast as
// DialConcurrency allows). Its connections are read by a goroutine each
// (Config.IO goroutine) or by a few epoll loops (epoll, poll non-nil); dials,
// bookkeeping and counting are the same for both.
type localFleet struct {
	cfg     Config
	first   int
	count   int
	rate    float64
	targets []*url.URL
	header  http.Header
	ready   []byte // ReadyMatch as bytes; nil: ready after the handshake

	shards   []statShard
	connectH lockedHist

	attempted, connected, failed, readyN, open, dropped, lost atomic.Int64
	dialsDone                                                 atomic.Bool

	errMu sync.Mutex // guards errs.
	errs  map[string]int64

	mu       sync.Mutex // guards clients and stopping; held while adding to readWG.
	clients  []*client
	stopping atomic.Bool

	poll *pollers // the epoll loops reading the connections; nil: a goroutine each

	baseMem memUse // this process's memory before the first dial (idle scenario); read by stop

	ctx    context.Context
	cancel context.CancelFunc
	dialWG sync.WaitGroup // dials in flight
	readWG sync.WaitGroup // reader goroutines (goroutine I/O)
	rampWG sync.WaitGroup // the ramp goroutine
}

// client is one connection of a localFleet. Its reader is the goroutine that
// reads it (goroutine I/O) or the epoll loop that holds it (epoll I/O), and
// before that the goroutine that dials it.
type client struct {
	f       *localFleet
	ws      *wsConn // the connection; with epoll I/O only until a poller holds its socket
	shard   *statShard
	target  int
	key     int      // target index the connection expects publications from
	chans   []uint32 // channels joined (channels scenario)
	streams []stream // one per (publisher, channel) seen; reader-owned
	acks    int      // ready-match frames seen; reader-owned
	ready   atomic.Bool
	counted atomic.Bool // set by mark: the connection's deliveries count
	dead    atomic.Bool // the reader has let the connection go

	ep epollConn // epoll I/O: the socket and its frame reader; reader-owned
}

var _ fleet = (*localFleet)(nil)

func newLocalFleet(cfg Config, first, count int, rate float64) (*localFleet, error) {
	f := &localFleet{cfg: cfg, first: first, count: count, rate: rate, errs: map[string]int64{}}
	for _, s := range cfg.URLs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		f.targets = append(f.targets, u)
	}
	f.header = http.Header{}
	if cfg.Token != "" {
		f.header.Set("Authorization", "Bearer "+cfg.Token)
	}
	if m := readyMatch(cfg); m != "" {
		f.ready = []byte(m)
	}
	if cfg.IO == IOEpoll {
		var err error
		if f.poll, err = newPollers(f, count); err != nil {
			return nil, err
		}
	}
	f.shards = make([]statShard, 16)
	for i := range f.shards {
		f.shards[i].lat.h = NewHistogram()
	}
	f.connectH.h = NewHistogram()
	return f, nil
}

// readyMatch returns the effective ready-match text, "" for none.
func readyMatch(cfg Config) string {
	if cfg.ReadyMatch == "-" || cfg.Scenario == Connect || cfg.Scenario == Idle {
		return ""
	}
	return cfg.ReadyMatch
}

func (f *localFleet) start(ctx context.Context) error {
	f.ctx, f.cancel = context.WithCancel(ctx)
	if f.cfg.Scenario == Idle {
		f.baseMem = sampleMemory()
	}
	if f.poll != nil {
		if err := f.poll.start(); err != nil {
			return err
		}
	}
	f.rampWG.Add(1)
	go f.ramp()
	return nil
}

// ramp opens the fleet's connections at its rate with at most DialConcurrency
// handshakes in flight. Runs in its own goroutine.
func (f *localFleet) ramp() {
	defer f.rampWG.Done()
	defer f.dialsDone.Store(true)
	defer f.dialWG.Wait()
	sem := make(chan struct{}, f.cfg.DialConcurrency)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; i < f.count; i++ {
		if f.rate > 0 {
			if wait := time.Until(start.Add(time.Duration(float64(i) / f.rate * float64(time.Second)))); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-f.ctx.Done():
					return
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-f.ctx.Done():
			return
		}
		f.attempted.Add(1)
		f.dialWG.Add(1)
		go func(i int) {
			c := f.dial(i)
			if c != nil && f.poll != nil {
				// Handed over before the dial counts as done, so that a
				// stop, which waits for the dials, finds it held.
				f.poll.hold(c, i)
				c = nil
			}
			<-sem
			f.dialWG.Done()
			if c != nil {
				c.readLoop()
				f.readWG.Done()
			}
		}(i)
	}
}

// dial opens connection i of the fleet, sends its subscriptions, and returns it
// (with goroutine I/O registered with readWG), or nil.
func (f *localFleet) dial(i int) *client {
	g := f.first + i
	nt := len(f.targets)
	c := &client{f: f, target: g % nt, shard: &f.shards[g%len(f.shards)]}
	c.key = c.target
	if f.cfg.PublishTo == PublishFirst {
		c.key = 0
	}
	d := &net.Dialer{Timeout: f.cfg.ConnectTimeout}
	if src := f.cfg.SourceIPs; len(src) > 0 {
		ip := src[(g/nt)%len(src)]
		d.LocalAddr = &net.TCPAddr{IP: ip.AsSlice()}
		d.Control = bindNoPort
	}
	t0 := time.Now()
	ws, err := dialWS(f.ctx, d, f.targets[c.target], f.header, f.cfg.ReadBufferSize, f.cfg.ConnectTimeout)
	if err != nil {
		if f.ctx.Err() != nil {
			f.countErr("connect_cancelled")
		} else {
			f.countErr("connect_" + errorKind(err))
		}
		f.failed.Add(1)
		return nil
	}
	f.connectH.record(time.Since(t0).Microseconds())
	f.connected.Add(1)
	f.open.Add(1)
	c.ws = ws
	if f.cfg.Scenario == Channels {
		c.chans = pickChannels(f.cfg, g)
	}
	for _, ch := range c.chans {
		msg := strings.ReplaceAll(f.cfg.SubscribeTemplate, "{{channel}}", f.cfg.ChannelPrefix+strconv.Itoa(int(ch)))
		if err := ws.write(opText, []byte(msg)); err != nil {
			f.countErr("subscribe_" + errorKind(err))
			f.open.Add(-1)
			f.dropped.Add(1)
			ws.close()
			return nil
		}
	}
	if f.cfg.Scenario == Broadcast && f.cfg.SubscribeTemplate != "" {
		// A server that needs a subscription for broadcasts gets one, with the
		// channel placeholder naming channel 0.
		msg := strings.ReplaceAll(f.cfg.SubscribeTemplate, "{{channel}}", f.cfg.ChannelPrefix+"0")
		if err := ws.write(opText, []byte(msg)); err != nil {
			f.countErr("subscribe_" + errorKind(err))
		}
	}
	if f.ready == nil {
		c.ready.Store(true)
		f.readyN.Add(1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping.Load() {
		f.open.Add(-1)
		ws.close()
		return nil
	}
	f.clients = append(f.clients, c)
	if f.poll == nil {
		f.readWG.Add(1)
	}
	return c
}

// pickChannels chooses SubsPerConn distinct channels for connection g,
// reproducibly from the seed.
func pickChannels(cfg Config, g int) []uint32 {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(g)))
	var z *rand.Zipf
	if cfg.Zipf && cfg.Channels > 1 {
		z = rand.NewZipf(rng, cfg.ZipfS, 1, uint64(cfg.Channels-1))
	}
	out := make([]uint32, 0, cfg.SubsPerConn)
	for tries := 0; len(out) < cfg.SubsPerConn; tries++ {
		var ch uint32
		switch {
		case tries > 64*cfg.SubsPerConn: // a skewed zipf keeps repeating: fill in order
			ch = uint32(tries % cfg.Channels)
		case z != nil:
			ch = uint32(z.Uint64())
		default:
			ch = uint32(rng.IntN(cfg.Channels))
		}
		dup := false
		for _, o := range out {
			dup = dup || o == ch
		}
		if !dup {
			out = append(out, ch)
		}
	}
	return out
}

// readLoop reads the connection until it fails or the fleet stops. It is the
// hot path of goroutine I/O: no allocation per frame. Runs in the connection's
// goroutine.
func (c *client) readLoop() {
	for {
		_, p, err := c.ws.next()
		if err != nil {
			c.ended(err)
			c.ws.close()
			return
		}
		c.received(p, time.Now().UnixNano())
	}
}

// received counts one text or binary message p that arrived at now (Unix
// nanos): a marker frame is checked against its stream and its latency
// recorded; any other frame may make the connection ready. No allocation
// once the connection's streams exist. Called by the connection's reader.
func (c *client) received(p []byte, now int64) {
	f, sh := c.f, c.shard
	m, ok := findMarker(p)
	if !ok {
		sh.other.Add(1)
		if f.ready != nil && !c.ready.Load() && bytes.Contains(p, f.ready) {
			if c.acks++; c.acks >= max(len(c.chans), 1) {
				c.ready.Store(true)
				f.readyN.Add(1)
			}
		}
		return
	}
	sh.received.Add(1)
	sh.bytes.Add(int64(len(p)))
	if !c.counted.Load() {
		sh.ignored.Add(1)
		return
	}
	switch c.stream(m.pub, m.ch).observe(m.seq) {
	case arrivedInOrder:
		sh.delivered(now, (now-m.ts)/1e3, false)
	case arrivedLate, arrivedTooLate:
		sh.delivered(now, (now-m.ts)/1e3, true)
	case arrivedDuplicate:
		sh.dups.Add(1)
	}
}

// ended records that the connection's reads ended with err: a connection
// lost, unless the fleet is stopping. The caller closes it. Called by the
// connection's reader.
func (c *client) ended(err error) {
	f := c.f
	c.dead.Store(true)
	if !f.stopping.Load() {
		f.dropped.Add(1)
		if c.counted.Load() {
			f.lost.Add(1)
		}
		f.countErr(readErrorKind(err))
	}
	f.open.Add(-1)
}

// stream returns the connection's tracker of (pub, ch).
func (c *client) stream(pub, ch uint32) *stream {
	for i := range c.streams {
		if s := &c.streams[i]; s.pub == pub && s.ch == ch {
			return s
		}
	}
	c.streams = append(c.streams, stream{pub: pub, ch: ch})
	return &c.streams[len(c.streams)-1]
}

func (f *localFleet) countErr(kind string) {
	f.errMu.Lock()
	f.errs[kind]++
	f.errMu.Unlock()
}

func (f *localFleet) counts() Counts {
	c := Counts{
		Attempted: f.attempted.Load(),
		Connected: f.connected.Load(),
		Failed:    f.failed.Load(),
		Ready:     f.readyN.Load(),
		Open:      f.open.Load(),
		Dropped:   f.dropped.Load(),
		Lost:      f.lost.Load(),
		DialsDone: f.dialsDone.Load(),
	}
	for i := range f.shards {
		sh := &f.shards[i]
		c.Received += sh.received.Load()
		c.Unique += sh.unique.Load()
		c.Duplicates += sh.dups.Load()
		c.OutOfOrder += sh.ooo.Load()
		c.Ignored += sh.ignored.Load()
		c.Other += sh.other.Load()
		c.Bytes += sh.bytes.Load()
		c.LastDelivery = max(c.LastDelivery, sh.last.Load())
	}
	f.errMu.Lock()
	if len(f.errs) > 0 {
		c.Errors = make(map[string]int64, len(f.errs))
		for k, v := range f.errs {
			c.Errors[k] = v
		}
	}
	f.errMu.Unlock()
	return c
}

func (f *localFleet) drain(lat, conn *hdrhistogram.Histogram) Counts {
	c := f.counts() // first: every delivery counted here has recorded its sample
	for i := range f.shards {
		f.shards[i].lat.drainInto(lat)
	}
	f.connectH.drainInto(conn)
	return c
}

func (f *localFleet) mark() ([]subCount, error) {
	type key struct{ t, ch int }
	subs := map[key]int64{}
	f.mu.Lock()
	for _, c := range f.clients {
		if !c.ready.Load() || c.dead.Load() {
			continue
		}
		c.counted.Store(true)
		if len(c.chans) == 0 {
			subs[key{c.key, 0}]++
		}
		for _, ch := range c.chans {
			subs[key{c.key, int(ch)}]++
		}
	}
	f.mu.Unlock()
	out := make([]subCount, 0, len(subs))
	for k, n := range subs {
		out = append(out, subCount{Target: k.t, Channel: k.ch, N: n})
	}
	return out, nil
}

func (f *localFleet) stop(lat, conn *hdrhistogram.Histogram) (fleetFinal, error) {
	f.mu.Lock()
	f.stopping.Store(true)
	f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
	}
	f.rampWG.Wait() // every dial has finished: with epoll, its connection is held
	var mem *fleetMemory
	if f.cfg.Scenario == Idle && f.ctx != nil {
		mem = &fleetMemory{Base: f.baseMem, Held: sampleMemory(), Conns: f.open.Load()}
	}
	if f.poll != nil {
		f.poll.stop()
	} else {
		f.mu.Lock()
		for _, c := range f.clients {
			c.ws.close()
		}
		f.mu.Unlock()
		f.readWG.Wait()
	}
	return fleetFinal{Counts: f.drain(lat, conn), Memory: mem}, nil
}

// errorKind names an error for the errors-by-kind table.
func errorKind(err error) string {
	var he handshakeError
	var ce closeError
	var ne net.Error
	switch {
	case errors.As(err, &he):
		if he.status != 0 {
			return "http_" + strconv.Itoa(he.status)
		}
		return "handshake"
	case errors.As(err, &ce):
		return "closed_" + strconv.Itoa(ce.code)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no_local_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_files"
	case errors.Is(err, syscall.EPIPE):
		return "broken_pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// readErrorKind names the error that ended a connection's reads.
func readErrorKind(err error) string {
	var ce closeError
	if errors.As(err, &ce) {
		return "closed_" + strconv.Itoa(ce.code)
	}
	if errors.Is(err, errWriteBlocked) {
		return "pongs_blocked"
	}
	return "read_" + errorKind(err)
}
