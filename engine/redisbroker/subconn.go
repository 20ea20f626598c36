package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
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
type subConn struct {
	b     *Broker
	idx   int
	probe string // this connection's probe channel

	mu        sync.Mutex               // guards the fields below.
	want      map[string]*subscription // Redis channel → wanted subscription
	gen       uint64                   // connection generation, bumped on each new connection
	connected bool                     // the probe channel's subscription is confirmed on the current connection

	wake chan struct{} // capacity 1: want changed; a full channel already has a wake-up pending
	kick chan struct{} // capacity 1: the monitor found the connection wedged

	probeSent atomic.Int64 // sequence number of the last probe published
	probeAt   atomic.Int64 // unix nanoseconds it was published; 0 when none is outstanding
	probeSeen atomic.Int64 // sequence number of the last probe received
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
		b:     b,
		idx:   idx,
		probe: b.names.prefix + "probe:" + b.id + ":" + strconv.Itoa(idx),
		want:  make(map[string]*subscription),
		wake:  make(chan struct{}, 1),
		kick:  make(chan struct{}, 1),
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
	log := s.b.log.With("pubsub_conn", s.idx)
	for attempt, everConnected := 0, false; ; attempt++ {
		if s.b.closed() {
			return
		}
		ok, err := s.session(attempt > 0 || everConnected)
		if ok {
			everConnected = true
			attempt = 0
		}
		if s.b.closed() {
			return
		}
		d := s.b.backoff(attempt)
		log.Warn("redisbroker: subscriber connection lost; reconnecting", "err", err, "retry_in", d.Round(time.Millisecond))
		if !s.b.sleep(d) {
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

	s.mu.Lock()
	s.gen++
	gen := s.gen
	chans := make([]string, 0, len(s.want)+1)
	chans = append(chans, s.probe)
	for rc, sub := range s.want {
		chans = append(chans, rc)
		if sub.confirmed {
			sub.confirmed = false
			sub.ready = make(chan struct{})
		}
	}
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
		s.mu.Unlock()
		b.markSubDown()
		_ = ps.Close()
		if !readerDone {
			<-lost
		}
	}()
	if err := subscribeChunks(ps, "subscribe", chans); err != nil {
		b.markDown(err)
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
				b.markDown(err) // Publish fails fast until Redis answers a PING again
			}
			return s.live(), err
		case <-s.kick:
			b.m.probeFailures.Inc()
			return s.live(), errors.New("liveness probe did not come back in time: connection wedged")
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

// read hands what the connection receives to the broker. Runs in its own
// goroutine for one connection; sends its exit error on lost.
func (s *subConn) read(ps *redis.PubSub, gen uint64, lost chan<- error, reconnect bool) {
	for {
		msg, err := ps.Receive(context.Background())
		if err != nil {
			lost <- err
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				s.confirm(m.Channel, gen, reconnect)
			}
		case *redis.Message:
			if m.Channel == s.probe {
				s.probeReceived(m.Payload)
				continue
			}
			s.b.dispatch(m.Channel, m.Payload)
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
	if becameLive {
		s.probeAt.Store(0)
		if reconnect {
			s.b.m.reconnects.Inc()
			s.b.log.Info("redisbroker: subscriber connection restored, subscriptions resent", "pubsub_conn", s.idx, "channels", s.count())
		}
	}
}

// probeReceived records a probe that came back.
func (s *subConn) probeReceived(payload string) {
	e, err := decode(payload)
	if err != nil || e.kind != kindProbe {
		return
	}
	if n, err := strconv.ParseInt(string(e.data), 10, 64); err == nil {
		s.probeSeen.Store(n)
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

// dispatch hands one pub/sub message to the engine. Called on reader
// goroutines; no broker lock is held.
func (b *Broker) dispatch(rc, payload string) {
	e, err := decode(payload)
	if err != nil {
		b.m.badMessages.Inc()
		b.log.Debug("redisbroker: ignoring malformed message", "channel", rc, "err", err)
		return
	}
	b.m.received.Inc()
	switch {
	case e.kind == kindPublication && strings.HasPrefix(rc, b.names.ch):
		// Our own publications were delivered locally already, except on
		// history channels: they come back with the offset only Redis knew.
		if e.origin == b.id && e.offset == "" {
			return
		}
		b.h.HandlePublication(rc[len(b.names.ch):], e.offset, e.data)
	case e.kind == kindBroadcast && rc == b.names.broadcast:
		if e.origin == b.id {
			return
		}
		b.h.HandleBroadcast(e.data)
	case e.kind == kindProbe && strings.HasPrefix(rc, b.names.ch):
		// A History marker: everything published before it has been handled.
		if e.origin == b.id {
			if ch, ok := b.markers.LoadAndDelete(string(e.data)); ok {
				close(ch.(chan struct{}))
			}
		}
	case e.kind == kindPrivate && rc == b.names.inst:
		if err := b.h.HandlePrivate(e.to, e.by, e.data); err != nil {
			b.log.Debug("redisbroker: routed private message not delivered", "to", e.to, "err", err)
		}
	}
}
