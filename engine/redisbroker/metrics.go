package redisbroker

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// Reasons a message could not be published.
const (
	reasonQueueFull   = "queue_full"
	reasonUnavailable = "unavailable"
	reasonError       = "error"
)

// brokerMetrics live in the engine's metrics set (BrokerHandler.Metrics).
type brokerMetrics struct {
	set *metrics.Set

	outage                    *metrics.FloatCounter
	reconnects, probeFailures *metrics.Counter
	published, received       *metrics.Counter
	batches, badMessages      *metrics.Counter
	registryErrors            *metrics.Counter
	failures                  map[string]*metrics.Counter
}

func newBrokerMetrics(b *Broker, set *metrics.Set) *brokerMetrics {
	if set == nil {
		set = metrics.NewSet()
	}
	m := &brokerMetrics{set: set, failures: make(map[string]*metrics.Counter)}
	counter := set.GetOrCreateCounter
	gauge := func(name string, f func() float64) { set.GetOrCreateGauge(name, f) }
	m.outage = set.GetOrCreateFloatCounter(`shardhub_redis_outage_seconds_total`)
	m.reconnects = counter(`shardhub_redis_reconnects_total`)
	m.probeFailures = counter(`shardhub_redis_probe_failures_total`)
	m.published = counter(`shardhub_redis_published_total`)
	m.received = counter(`shardhub_redis_received_total`)
	m.batches = counter(`shardhub_redis_publish_batches_total`)
	m.badMessages = counter(`shardhub_redis_malformed_messages_total`)
	m.registryErrors = counter(`shardhub_redis_registry_errors_total`)
	for _, r := range []string{reasonQueueFull, reasonUnavailable, reasonError} {
		m.failures[r] = counter(fmt.Sprintf(`shardhub_redis_publish_failures_total{reason=%q}`, r))
	}
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
	gauge(`shardhub_redis_publish_queue_length`, func() float64 {
		n := 0
		for _, w := range b.writers {
			n += len(w.q)
		}
		return float64(n)
	})
	gauge(`shardhub_redis_registry_connections`, func() float64 { return float64(b.reg.count.Load()) })
	return m
}

// unpublished counts n messages that did not reach Redis.
func (m *brokerMetrics) unpublished(reason string, n int) { m.failures[reason].Add(n) }

func (m *brokerMetrics) outageSeconds() float64 { return m.outage.Get() }
