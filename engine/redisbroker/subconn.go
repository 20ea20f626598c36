package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

func rand01() float64 { return rand.Float64() }

// subConn is one Redis connection carrying the subscriptions of the channels
// hashed to it. Its controller goroutine owns the connection: it dials,
// subscribes everything wanted, applies changes as they come, and on any
// failure closes it and starts over with backoff, so every subscription is
// restored after an outage.
//
// What the connection delivers is read by a reader goroutine (one per
// connection) that never calls the engine: it decodes, checks the sequence
// (seq.go) and hands the message to the connection's worker through handoff,
// a bounded queue. So a slow engine (a recovery holding a history gate) never
// stalls the connection, and the probe, which the reader handles itself,
// keeps measuring Redis, not the engine.
type subConn struct {
	b     *Broker
	idx   int
	probe string // this connection's probe channel

	mu        sync.Mutex               // guards the fields below.
	want      map[string]*subscription // Redis channel → wanted subscription
	gen       uint64                   // connection generation, bumped on each new connection
	connected bool                     // the probe channel's subscription is confirmed on the current connection
	probeDue  time.Time                // a probe was due then and nothing has arrived since; zero when none is outstanding
	probeAck  time.Time                // Redis answered the outstanding probe's PUBLISH then; zero until it does
	probeMark uint64                   // recv when the probe was due

	wake  chan struct{} // capacity 1: want changed; a full channel already has a wake-up pending
	kick  chan struct{} // capacity 1: the monitor found the connection dead
	retry chan struct{} // capacity 1: Redis answers again: skip the rest of the backoff

	recv atomic.Uint64 // everything read from the connection so far (messages, confirmations): its pulse
	trk  *tracker      // the positions of the publishers on the wanted channels (seq.go)
	// handoff carries what the reader read to the worker, in order. Bounded
	// by Config.HandoffQueue: when full, the reader drops the message and
	// counts it lost (its sequence was recorded, so it is counted once).
	handoff *handoffQueue
	warned  atomic.Bool // this connection's failure was logged in the current outage
}

// delivery is a message read from Redis for the worker.
type delivery struct {
	rc string
	e  envelope
}

// subscription is the wanted state of one Redis channel.
type subscription struct {
	engine    bool          // wanted by the engine (it has local subscribers), or permanent
	holds     int           // Hold calls not released yet
	confirmed bool          // Redis confirmed it on connection gen
	gen       uint64        // the connection generation it was confirmed on
	ready     chan struct{} // closed once confirmed; replaced when a new connection starts
}

func newSubConn(b *Broker, idx int) *subConn {
	return &subConn{
		b:       b,
		idx:     idx,
		probe:   b.names.probeChannel(b.id, idx),
		want:    make(map[string]*subscription),
		wake:    make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		retry:   make(chan struct{}, 1),
		trk:     newTracker(),
		handoff: newHandoffQueue(b.cfg.HandoffQueue),
	}
}

func (s *subConn) signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// add records that rc is wanted, by the engine or by a Hold.
func (s *subConn) add(rc string, byEngine bool) *subscription {
	s.mu.Lock()
	sub := s.want[rc]
	if sub == nil {
		sub = &subscription{ready: make(chan struct{})}
		s.want[rc] = sub
		s.trk.want(rc)
		s.signal(s.wake)
	}
	if byEngine {
		sub.engine = true
	} else {
		sub.holds++
	}
	s.mu.Unlock()
	return sub
}

// remove undoes add; the subscription goes when nobody wants it.
func (s *subConn) remove(rc string, byEngine bool) {
	s.mu.Lock()
	if sub := s.want[rc]; sub != nil {
		if byEngine {
			sub.engine = false
		} else {
			sub.holds--
		}
		if !sub.engine && sub.holds <= 0 {
			delete(s.want, rc)
			s.trk.drop(rc)
			s.signal(s.wake)
		}
	}
	s.mu.Unlock()
}

func (s *subConn) live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

func (s *subConn) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.want)
}

// run is the controller. Runs in its own goroutine until Close.
func (s *subConn) run() {
	defer s.b.wg.Done()
	for attempt, everConnected := 0, false; ; attempt++ {
		if s.b.closed() {
			return
		}
		ok, err := s.session(everConnected)
		if ok {
			everConnected = true
			attempt = 0
		}
		if s.b.closed() {
			return
		}
		d := s.b.backoff(attempt)
		if s.warned.CompareAndSwap(false, true) {
			s.b.log.Warn("redisbroker: subscriber connection lost; reconnecting", "pubsub_conn", s.idx, "err", err,
				"retry_in", d.Round(time.Millisecond))
		} else {
			s.b.log.Debug("redisbroker: subscriber connection lost; reconnecting", "pubsub_conn", s.idx, "err", err,
				"retry_in", d.Round(time.Millisecond))
		}
		if !s.b.sleep(d, s.retry) {
			return
		}
	}
}

// session runs one connection until it fails or Close. ok reports whether it
// got as far as live.
func (s *subConn) session(reconnect bool) (ok bool, err error) {
	b := s.b
	ps := b.client.Subscribe(context.Background())
	defer ps.Close()

	// The probe channel goes last: Redis handles a connection's commands in
	// order, so once it is confirmed (the connection is live) every channel
	// wanted at the start is subscribed, and other instances that see it
	// subscribed (PUBSUB NUMSUB, monitor.go) know this instance is.
	s.mu.Lock()
	s.gen++
	gen := s.gen
	s.probeDue, s.probeAck = time.Time{}, time.Time{}
	chans := make([]string, 0, len(s.want)+1)
	for rc, sub := range s.want {
		chans = append(chans, rc)
		if sub.confirmed {
			sub.confirmed = false
			sub.ready = make(chan struct{})
		}
	}
	chans = append(chans, s.probe)
	s.mu.Unlock()
	sent := make(map[string]bool, len(chans))
	for _, rc := range chans {
		sent[rc] = true
	}

	lost := make(chan error, 1) // the reader's exit; it sends exactly once
	readerDone := false
	defer func() {
		s.mu.Lock()
		s.connected = false
		s.probeDue, s.probeAck = time.Time{}, time.Time{}
		s.mu.Unlock()
		b.noteFailure(time.Now())
		_ = ps.Close()
		if !readerDone {
			<-lost
		}
	}()
	if err := subscribeChunks(ps, "subscribe", chans); err != nil {
		b.markDown(err, time.Now())
		// The reader is not running yet.
		readerDone = true
		return false, err
	}
	go s.read(ps, gen, lost, reconnect)

	// Probes only watch live connections: one whose SUBSCRIBE is never
	// confirmed (Redis, or the path to it, wedged before the first reply)
	// would wait here forever, degraded but never replaced. It gets
	// ProbeTimeout to become live.
	var unconfirmed <-chan time.Time
	if b.cfg.ProbeInterval > 0 {
		t := time.NewTimer(b.cfg.ProbeTimeout)
		defer t.Stop()
		unconfirmed = t.C
	}

	for {
		select {
		case <-unconfirmed:
			unconfirmed = nil
			if !s.live() {
				b.m.probeFailures.Inc()
				return false, fmt.Errorf("subscriptions not confirmed within %v: connection wedged", b.cfg.ProbeTimeout)
			}
		case <-s.wake:
			if err := s.sync(ps, sent); err != nil {
				return s.live(), err
			}
		case err := <-lost:
			readerDone = true
			if isNetworkError(err) {
				b.markDown(err, time.Now()) // the monitor PINGs until Redis answers
			}
			return s.live(), err
		case <-s.kick:
			return s.live(), errors.New("nothing delivered within the probe timeout: connection dead")
		case <-b.quit:
			return true, nil
		}
	}
}

// sync sends the SUBSCRIBE and UNSUBSCRIBE commands that bring the connection
// to the wanted set.
func (s *subConn) sync(ps *redis.PubSub, sent map[string]bool) error {
	var add, drop []string
	s.mu.Lock()
	for rc := range s.want {
		if !sent[rc] {
			add = append(add, rc)
		}
	}
	for rc := range sent {
		if _, ok := s.want[rc]; !ok && rc != s.probe {
			drop = append(drop, rc)
		}
	}
	s.mu.Unlock()
	for _, rc := range add {
		sent[rc] = true
	}
	for _, rc := range drop {
		delete(sent, rc)
	}
	if err := subscribeChunks(ps, "subscribe", add); err != nil {
		return err
	}
	return subscribeChunks(ps, "unsubscribe", drop)
}

func subscribeChunks(ps *redis.PubSub, cmd string, chans []string) error {
	ctx := context.Background()
	for len(chans) > 0 {
		n := min(len(chans), subscribeChunk)
		var err error
		if cmd == "subscribe" {
			err = ps.Subscribe(ctx, chans[:n]...)
		} else {
			err = ps.Unsubscribe(ctx, chans[:n]...)
		}
		if err != nil {
			return err
		}
		chans = chans[n:]
	}
	return nil
}

// read takes what the connection delivers. Runs in its own goroutine for one
// connection; sends its exit error on lost. It never calls the engine.
func (s *subConn) read(ps *redis.PubSub, gen uint64, lost chan<- error, reconnect bool) {
	for {
		msg, err := ps.Receive(context.Background())
		if err != nil {
			lost <- err
			return
		}
		s.recv.Add(1)
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				s.confirm(m.Channel, gen, reconnect)
			}
		case *redis.Message:
			if m.Channel != s.probe { // a probe's arrival is all it says
				s.receive(m.Channel, m.Payload)
			}
		}
	}
}

// confirm marks rc subscribed on connection gen.
func (s *subConn) confirm(rc string, gen uint64, reconnect bool) {
	s.mu.Lock()
	if gen != s.gen {
		s.mu.Unlock()
		return
	}
	becameLive := false
	if rc == s.probe {
		becameLive = !s.connected
		s.connected = true
	} else if sub := s.want[rc]; sub != nil && !sub.confirmed {
		sub.confirmed, sub.gen = true, gen
		close(sub.ready)
	}
	s.mu.Unlock()
	if !becameLive {
		return
	}
	b := s.b
	if reconnect {
		b.m.reconnects.Inc()
		b.log.Info("redisbroker: subscriber connection restored, subscriptions confirmed", "pubsub_conn", s.idx, "channels", s.count())
		// It may have missed the tail of some streams: ask every instance
		// to announce where its streams are (seq.go). And the registry may
		// have been lost with Redis: rewrite it.
		b.syncWant.Store(true)
		b.reg.resyncNow()
	}
	s.warned.Store(false)
	b.pokeMonitor()
}

// receive handles one pub/sub message on the reader goroutine: decode, check
// the sequence, hand it to the worker.
func (s *subConn) receive(rc, payload string) {
	b := s.b
	e, err := decode(payload)
	if err != nil {
		b.m.badMessages.Inc()
		return
	}
	switch e.kind {
	case kindSync:
		if rc == b.names.sync {
			b.requestAnnouncements()
		}
		return
	case kindProbe: // a History marker of this instance
		if e.origin != b.id || !strings.HasPrefix(rc, b.names.ch) {
			return
		}
	case kindPrivate:
		if rc != b.names.inst {
			b.m.badMessages.Inc()
			return
		}
	default: // sequenced
		if (e.kind == kindBroadcast) != (rc == b.names.broadcast) || (rc != b.names.broadcast && !strings.HasPrefix(rc, b.names.ch)) {
			b.m.badMessages.Inc()
			return
		}
		// Our own publications were delivered locally already, except on
		// history channels: they come back with the offset only Redis knew,
		// and are tracked like anyone's.
		if e.origin == b.id && (e.kind == kindBroadcast || b.cfg.rule(rc[len(b.names.ch):]) == nil) {
			return
		}
		v, lost := s.trk.observe(rc, &e, b.coarseNow())

		if lost > 0 {
			b.m.lost.Add(int(lost))
			b.logLimited("lost", "redisbroker: messages of another instance missed (counted lost)",
				"channel", rc, "origin", e.origin, "missed", lost)
		}
		switch {
		case v == duplicate:
			b.m.duplicates.Inc()
			return
		case v == unwanted || e.kind == kindAnnounce || e.kind == kindVoid:
			return
		}
	}
	if !s.handoff.offer(delivery{rc: rc, e: e}) {
		b.m.handoffOverflow.Inc()
		if sequenced(e.kind) {
			b.m.lost.Inc()
		}
		b.logLimited("handoff", "redisbroker: hand-off queue full, engine not keeping up; message dropped (counted lost)",
			"pubsub_conn", s.idx, "capacity", s.handoff.max)
	}
}

// workerBatch is how many deliveries a worker takes from its queue at once.
const workerBatch = 64

// work hands what the reader read to the engine, in order. Runs in its own
// goroutine from Start until the hand-off queue is closed (Close, once the
// readers have stopped).
func (s *subConn) work() {
	defer s.b.workers.Done()
	batch := make([]delivery, 0, workerBatch)
	for {
		var ok bool
		if batch, ok = s.handoff.take(batch); !ok {
			return
		}
		for i := range batch {
			s.b.dispatch(batch[i])
		}
		clear(batch) // let the payloads go
	}
}

// hold waits until rc is subscribed on a live connection. During an outage it
// fails at once rather than make every new subscriber wait for its end.
func (s *subConn) hold(ctx context.Context, rc string) (gen uint64, err error) {
	s.add(rc, false)
	for {
		s.mu.Lock()
		sub := s.want[rc]
		ready, confirmed, g, live := sub.ready, sub.confirmed, sub.gen, s.connected
		s.mu.Unlock()
		if confirmed {
			return g, nil
		}
		if !live && !s.b.up.Load() { // an outage, not a connection being set up
			s.remove(rc, false)
			return 0, ErrUnavailable
		}
		select {
		case <-ready:
		case <-ctx.Done():
			s.remove(rc, false)
			return 0, ctx.Err()
		case <-s.b.quit:
			s.remove(rc, false)
			return 0, ErrClosed
		}
	}
}

// intact reports whether the connection rc was confirmed on (generation gen)
// is still the live one.
func (s *subConn) intact(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected && s.gen == gen
}

// dispatch hands one message to the engine. Called on worker goroutines; no
// broker lock is held.
func (b *Broker) dispatch(d delivery) {
	e := &d.e
	switch e.kind {
	case kindPublication:
		b.h.HandlePublication(d.rc[len(b.names.ch):], e.offset, []byte(e.data))
		b.m.received.Inc()
	case kindBroadcast:
		b.h.HandleBroadcast([]byte(e.data))
		b.m.received.Inc()
	case kindProbe: // a History marker: everything published before it has been handled
		if ch, ok := b.markers.LoadAndDelete(e.data); ok {
			close(ch.(chan struct{}))
		}
	case kindPrivate:
		b.m.privateReceived.Inc()
		if err := b.h.HandlePrivate(e.to, e.by, []byte(e.data)); err != nil {
			b.log.Debug("redisbroker: routed private message not delivered", "to", e.to, "err", err)
		}
	}
}
