package redisbroker

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"

	"github.com/shardhub/shardhub/engine"
)

// ledgerReasons are the reasons the broker drops this instance's messages
// for, pre-created at zero. Other instances' messages found missing are
// counted apart (lost): they are outside the Handed balance.
var ledgerReasons = []engine.DropReason{
	engine.DropBrokerUnavailable, engine.DropBacklogOverflow, engine.DropShutdown,
}

// brokerMetrics live in the engine's metrics set (BrokerHandler.Metrics).
type brokerMetrics struct {
	set *metrics.Set

	// The ledger (Broker.Ledger).
	handed, published, received, lost *metrics.Counter
	dropped                           map[engine.DropReason]*metrics.Counter

	outage                            *metrics.FloatCounter
	reconnects, probeFailures         *metrics.Counter
	batches, badMessages, resent      *metrics.Counter
	duplicates, handoffOverflow       *metrics.Counter
	announcements, syncRequests       *metrics.Counter
	peerWaitTimeouts, registryErrors  *metrics.Counter
	privateSent, privateFailed        *metrics.Counter
	privateReceived, registryResyncs  *metrics.Counter
	registryResyncKeys, heartbeatsErr *metrics.Counter
}

func newBrokerMetrics(b *Broker, set *metrics.Set) *brokerMetrics {
	if set == nil {
		set = metrics.NewSet()
	}
	m := &brokerMetrics{set: set, dropped: make(map[engine.DropReason]*metrics.Counter)}
	counter := set.GetOrCreateCounter
	gauge := func(name string, f func() float64) { set.GetOrCreateGauge(name, f) }

	m.handed = counter(`shardhub_broker_handed_total`)
	m.published = counter(`shardhub_broker_published_total`)
	m.received = counter(`shardhub_broker_received_total`)
	m.lost = counter(`shardhub_broker_lost_total`)
	for _, r := range ledgerReasons {
		m.dropped[r] = counter(fmt.Sprintf(`shardhub_broker_dropped_total{reason=%q}`, r.String()))
	}
	gauge(`shardhub_broker_backlog`, func() float64 {
		n, _ := b.backlog()
		return float64(n)
	})
	gauge(`shardhub_broker_backlog_bytes`, func() float64 {
		_, n := b.backlog()
		return float64(n)
	})

	m.outage = set.GetOrCreateFloatCounter(`shardhub_redis_outage_seconds_total`)
	m.reconnects = counter(`shardhub_redis_reconnects_total`)
	m.probeFailures = counter(`shardhub_redis_probe_failures_total`)
	m.batches = counter(`shardhub_redis_publish_batches_total`)
	m.resent = counter(`shardhub_redis_resent_total`)
	m.badMessages = counter(`shardhub_redis_malformed_messages_total`)
	m.duplicates = counter(`shardhub_redis_duplicates_total`)
	m.handoffOverflow = counter(`shardhub_redis_handoff_overflow_total`)
	m.announcements = counter(`shardhub_redis_announcements_total`)
	m.syncRequests = counter(`shardhub_redis_sync_requests_total`)
	m.peerWaitTimeouts = counter(`shardhub_redis_peer_wait_timeouts_total`)
	m.privateSent = counter(`shardhub_redis_private_sent_total`)
	m.privateFailed = counter(`shardhub_redis_private_failures_total`)
	m.privateReceived = counter(`shardhub_redis_private_received_total`)
	m.registryErrors = counter(`shardhub_redis_registry_errors_total`)
	m.registryResyncs = counter(`shardhub_redis_registry_resyncs_total`)
	m.registryResyncKeys = counter(`shardhub_redis_registry_resync_keys_total`)
	m.heartbeatsErr = counter(`shardhub_redis_heartbeat_errors_total`)
	gauge(`shardhub_redis_up`, func() float64 {
		if b.Healthy() {
			return 1
		}
		return 0
	})
	gauge(`shardhub_redis_subscriptions`, func() float64 {
		n := 0
		for _, s := range b.subs {
			n += s.count()
		}
		return float64(n)
	})
	gauge(`shardhub_redis_handoff_queue_length`, func() float64 {
		n := 0
		for _, s := range b.subs {
			n += s.handoff.len()
		}
		return float64(n)
	})
	gauge(`shardhub_redis_tracked_positions`, func() float64 {
		n := 0
		for _, s := range b.subs {
			n += s.trk.size()
		}
		return float64(n)
	})
	gauge(`shardhub_redis_registry_connections`, func() float64 { return float64(b.reg.count.Load()) })
	return m
}

func (m *brokerMetrics) outageSeconds() float64 { return m.outage.Get() }

// backlog returns the messages and data bytes waiting in every writer.
func (b *Broker) backlog() (msgs int, bytes int64) {
	for _, w := range b.writers {
		n, by := w.backlog()
		msgs += n
		bytes += by
	}
	return msgs, bytes
}
