package redisbroker

import (
	"context"
	"strconv"
	"time"
)

// markSubDown notes that a subscriber connection went down (the monitor does
// the accounting and the logs).
func (b *Broker) markSubDown() {
	if !b.closed() {
		b.downSince.CompareAndSwap(0, time.Now().UnixNano())
	}
}

// monitor probes the subscriber connections, pings Redis while it is
// unreachable, accounts outage time and logs the transitions. Runs in its own
// goroutine until Close.
func (b *Broker) monitor() {
	defer b.wg.Done()
	tick := time.Second
	if b.cfg.ProbeInterval > 0 {
		tick = min(tick, b.cfg.ProbeInterval/2, b.cfg.ProbeTimeout/2)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	var lastProbe time.Time
	for {
		select {
		case <-b.quit:
			return
		case now := <-t.C:
			if !b.up.Load() {
				b.ping()
			}
			if b.cfg.ProbeInterval > 0 {
				b.checkProbes(now)
				if now.Sub(lastProbe) >= b.cfg.ProbeInterval {
					lastProbe = now
					b.sendProbes(now)
				}
			}
			b.account(last, now)
			last = now
		}
	}
}

// ping checks whether Redis answers again.
func (b *Broker) ping() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err == nil {
		b.up.Store(true)
	}
}

// account adds the outage time of the tick (last, now] and logs transitions.
func (b *Broker) account(last, now time.Time) {
	healthy := b.Healthy()
	since := b.downSince.Load()
	switch {
	case !healthy:
		if since == 0 {
			b.downSince.CompareAndSwap(0, now.UnixNano())
			since = now.UnixNano()
		}
		from := max(last.UnixNano(), since)
		if d := now.UnixNano() - from; d > 0 {
			b.m.outage.Add(float64(d) / 1e9)
		}
		if b.lastHealth.Swap(false) {
			b.log.Error("redisbroker: redis outage: local delivery continues, cross-instance delivery and history are paused",
				"addr", b.client.Options().Addr)
		}
	case since != 0:
		if from := max(last.UnixNano(), since); now.UnixNano() > from {
			b.m.outage.Add(float64(now.UnixNano()-from) / 1e9)
		}
		b.downSince.Store(0)
		b.lastHealth.Store(true)
		b.log.Info("redisbroker: redis reachable again, subscriptions restored",
			"outage", time.Duration(now.UnixNano()-since).Round(time.Millisecond).String())
	}
}

// sendProbes publishes a probe on each live subscriber connection's probe
// channel; checkProbes later verifies they came back.
func (b *Broker) sendProbes(now time.Time) {
	if !b.up.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ProbeTimeout)
	defer cancel()
	for _, s := range b.subs {
		if !s.live() || s.probeAt.Load() != 0 {
			continue
		}
		n := s.probeSent.Add(1)
		s.probeAt.Store(now.UnixNano())
		err := b.client.Publish(ctx, s.probe, encode(kindProbe, b.id, []byte(strconv.FormatInt(n, 10)))).Err()
		if err != nil {
			s.probeAt.Store(0)
			if isNetworkError(err) {
				b.markDown(err)
			}
			return
		}
	}
}

// checkProbes kicks the connections whose probe is overdue.
func (b *Broker) checkProbes(now time.Time) {
	for _, s := range b.subs {
		at := s.probeAt.Load()
		if at == 0 {
			continue
		}
		if s.probeSeen.Load() >= s.probeSent.Load() {
			s.probeAt.Store(0)
			continue
		}
		if now.Sub(time.Unix(0, at)) > b.cfg.ProbeTimeout {
			s.probeAt.Store(0)
			b.log.Warn("redisbroker: subscriber connection did not return its liveness probe; replacing it",
				"pubsub_conn", s.idx, "timeout", b.cfg.ProbeTimeout)
			s.signal(s.kick)
		}
	}
}
