package redisbroker

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// monitorTick paces the monitor: how soon it notices Redis answering
	// again, a connection come back, the peers subscribed, a probe overdue.
	monitorTick = 100 * time.Millisecond
	// pingTimeout bounds the monitor's PING (and peer check) while Redis is
	// not answering.
	pingTimeout = 500 * time.Millisecond
	// logEvery rate-limits the broker's repeated warnings.
	logEvery = 10 * time.Second
	// expireEvery is how often receivers forget idle origins (seq.go).
	expireEvery = time.Minute
)

// The cluster path's states (Broker.up, Broker.ready):
//
//	down        a command failed (or the first failure of a connection): up
//	            and ready are false, the outage starts (dated from the failed
//	            command's start); writers keep their backlog
//	recovering  the monitor's PING was answered (up): the subscriber
//	            connections skip their backoff and resubscribe, the registry
//	            is rewritten and the heartbeat sent at once; then, once every
//	            subscriber connection is live, the monitor waits (PeerWait at
//	            most) until every instance known before the outage has its
//	            probe channels subscribed again
//	up          ready: writers flush the backlog in order, Healthy is true,
//	            the outage ends (shardhub_redis_outage_seconds_total)

// pokeMonitor makes the monitor look at the state now rather than at its
// next tick.
func (b *Broker) pokeMonitor() {
	select {
	case b.poke <- struct{}{}:
	default:
	}
}

// monitor drives the cluster path's state, checks the probes, accounts outage
// time and logs the transitions. Runs in its own goroutine until Close.
func (b *Broker) monitor() {
	defer b.wg.Done()
	t := time.NewTicker(monitorTick)
	defer t.Stop()
	o := outage{}
	lastExpire := time.Now()
	for {
		select {
		case <-b.quit:
			return
		case <-t.C:
		case <-b.poke:
		}
		now := time.Now() // not the tick's time: the last round may have waited for Redis
		b.clock.Store(now.Unix())
		b.evaluate(now, &o)
		now = time.Now()
		if b.cfg.ProbeInterval > 0 {
			b.checkProbes(now)
		}
		if b.syncWant.Load() && b.up.Load() {
			b.sendSyncRequest()
		}
		if now.Sub(lastExpire) >= expireEvery {
			lastExpire = now
			cutoff := now.Unix() - trackIdle
			for _, s := range b.subs {
				s.trk.expire(cutoff)
			}
		}
		o.account(b, now)
	}
}

// coarseNow returns the monitor's clock in unix seconds (for expiry).
func (b *Broker) coarseNow() int64 { return b.clock.Load() }

// outage is the monitor's accounting of the current outage.
type outage struct {
	since   int64   // unix ns the outage being accounted began; 0 when none
	added   float64 // seconds of it added to the counter so far
	holding int64   // unix ns the wait for the peers began; 0 when not waiting
	logged  bool    // the outage was logged
}

// account adds the outage time up to now (from the first failure) to the
// counter; recovery is accounted by evaluate.
func (o *outage) account(b *Broker, now time.Time) {
	since := b.downSince.Load()
	if since == 0 {
		return
	}
	if o.since == 0 || since < o.since {
		o.since = since
	}
	if !o.logged && !b.closed() {
		o.logged = true
		b.log.Error("redisbroker: redis outage: local delivery continues, cross-instance publications wait in the backlog",
			"addr", b.client.Options().Addr)
	}
	if d := float64(now.UnixNano()-o.since) / 1e9; d > o.added {
		b.m.outage.Add(d - o.added)
		o.added = d
	}
}

// evaluate moves the cluster path towards ready.
func (b *Broker) evaluate(now time.Time, o *outage) {
	if b.ready.Load() || b.closed() {
		o.holding = 0
		return
	}
	if !b.up.Load() {
		o.holding = 0
		if !b.ping() {
			return
		}
		b.up.Store(true)
		// Skip the reconnection backoff, rewrite the registry, heartbeat.
		// A connection that lived through the outage had nothing to deliver
		// while Redis was silent: probe it afresh rather than judge it by a
		// probe that was due then.
		for _, s := range b.subs {
			s.signal(s.retry)
			s.mu.Lock()
			s.probeDue, s.probeAck = time.Time{}, time.Time{}
			s.mu.Unlock()
		}
		b.reg.resyncNow()
		b.probeNow()
	}
	for _, s := range b.subs {
		if !s.live() {
			o.holding = 0
			return
		}
	}
	if o.holding == 0 {
		o.holding = now.UnixNano()
	}
	if b.cfg.PeerWait > 0 && b.downSince.Load() != 0 {
		waited := time.Duration(now.UnixNano() - o.holding)
		if waited < b.cfg.PeerWait && !b.peersSubscribed() {
			return
		}
		if waited >= b.cfg.PeerWait {
			b.m.peerWaitTimeouts.Inc()
			b.log.Warn("redisbroker: flushing the backlog without every known instance subscribed again", "waited", b.cfg.PeerWait)
		}
	}
	b.recovered(time.Now(), o) // the checks above may have waited for Redis
}

// recovered makes the cluster path ready and ends the outage.
func (b *Broker) recovered(now time.Time, o *outage) {
	b.upSince.Store(now.UnixNano())
	b.ready.Store(true)

	since := b.downSince.Swap(0)
	if since != 0 && (o.since == 0 || since < o.since) {
		o.since = since
	}
	if o.since != 0 {
		d := float64(now.UnixNano()-o.since) / 1e9
		if d > o.added {
			b.m.outage.Add(d - o.added)
		}
		msgs := 0
		for _, w := range b.writers {
			n, _ := w.backlog()
			msgs += n
		}
		if o.logged {
			b.log.Info("redisbroker: cluster path ready again: subscriptions confirmed, flushing the backlog",
				"outage", time.Duration(now.UnixNano()-o.since).Round(time.Millisecond).String(), "backlog", msgs)
		}
	}
	*o = outage{}
	for _, w := range b.writers {
		w.signal()
	}
}

// ping reports whether Redis answers.
func (b *Broker) ping() bool {
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	return b.client.Ping(ctx).Err() == nil
}

// peersSubscribed reports whether every other instance known before the
// outage has all its probe channels subscribed in Redis: each instance
// subscribes its probe channel last on every connection (subConn.session),
// so then all its channels are subscribed and what is flushed reaches it.
func (b *Broker) peersSubscribed() bool {
	peers := b.reg.knownPeers()
	if len(peers) == 0 {
		return true
	}
	var chans []string
	for id, n := range peers {
		for i := range n {
			chans = append(chans, b.names.probeChannel(id, i))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	counts, err := b.client.PubSubNumSub(ctx, chans...).Result()
	if err != nil {
		return false
	}
	for _, c := range chans {
		if counts[c] < 1 {
			return false
		}
	}
	return true
}

// sendSyncRequest asks every instance to announce its streams (seq.go),
// after one of this instance's subscriber connections came back.
func (b *Broker) sendSyncRequest() {
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if b.client.Publish(ctx, b.names.sync, encode(kindSync, b.id, nil)).Err() == nil {
		b.syncWant.Store(false)
		b.m.syncRequests.Inc()
	}
}

// requestAnnouncements makes every writer announce its streams soon.
func (b *Broker) requestAnnouncements() {
	for _, w := range b.writers {
		w.syncReq.Store(true)
	}
}

// prober publishes, every ProbeInterval, a probe on each live subscriber
// connection's probe channel, over a connection of its own (a busy pool must
// not delay it); checkProbes declares dead a connection that delivered
// nothing (probe or anything else) within ProbeTimeout of Redis answering the
// probe's PUBLISH — or of the probe being due, when Redis does not answer:
// a frozen Redis answers neither, and the connection is replaced all the
// same. A PUBLISH that reached no subscriber means Redis lost the
// subscription: that connection is replaced at once. Runs in its own
// goroutine until Close.
func (b *Broker) prober() {
	defer b.wg.Done()
	if b.cfg.ProbeInterval <= 0 {
		<-b.quit
		return
	}
	t := time.NewTicker(b.cfg.ProbeInterval)
	defer t.Stop()
	var n int64
	for {
		select {
		case <-b.quit:
			return
		case <-t.C:
		case <-b.probeReq:
		}
		n++
		b.sendProbes(time.Now(), n)
	}
}

// probeNow makes the prober probe every live connection now.
func (b *Broker) probeNow() {
	select {
	case b.probeReq <- struct{}{}:
	default:
	}
}

func (b *Broker) sendProbes(now time.Time, n int64) {
	var due []*subConn
	for _, s := range b.subs {
		s.mu.Lock()
		if s.connected && s.probeDue.IsZero() {
			s.probeDue, s.probeMark = now, s.recv.Load()
			due = append(due, s)
		}
		s.mu.Unlock()
	}
	if len(due) == 0 || !b.up.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ProbeTimeout)
	defer cancel()
	token := []byte(strconv.FormatInt(n, 10))
	pipe := b.probeClient.Pipeline()
	cmds := make([]*redis.IntCmd, len(due))
	for i, s := range due {
		cmds[i] = pipe.Publish(ctx, s.probe, encode(kindProbe, b.id, token))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if isNetworkError(err) {
			b.markDown(err, now)
		}
		return
	}
	acked := time.Now()
	for i, s := range due {
		s.mu.Lock()
		if s.probeDue.Equal(now) {
			s.probeAck = acked
			if cmds[i].Val() == 0 { // Redis has no subscriber on it: the subscription is gone
				s.probeAck = now.Add(-b.cfg.ProbeTimeout)
			}
		}
		s.mu.Unlock()
	}
}

// checkProbes replaces the connections that delivered nothing since a probe
// was due ProbeTimeout ago.
func (b *Broker) checkProbes(now time.Time) {
	for _, s := range b.subs {
		s.mu.Lock()
		due, from := s.probeDue, s.probeDue
		if !s.probeAck.IsZero() {
			from = s.probeAck
		}
		switch {
		case due.IsZero() || !s.connected:
			s.mu.Unlock()
			continue
		case s.recv.Load() != s.probeMark:
			s.probeDue, s.probeAck = time.Time{}, time.Time{} // it delivered: alive
			s.mu.Unlock()
			continue
		case now.Sub(from) <= b.cfg.ProbeTimeout:
			s.mu.Unlock()
			continue
		}
		s.probeDue, s.probeAck = time.Time{}, time.Time{}
		s.mu.Unlock()
		b.m.probeFailures.Inc()
		b.noteFailure(due)
		if s.warned.CompareAndSwap(false, true) {
			b.log.Warn("redisbroker: subscriber connection delivered nothing, not even its probe; replacing it",
				"pubsub_conn", s.idx, "timeout", b.cfg.ProbeTimeout)
		}
		s.signal(s.kick)
	}
}
