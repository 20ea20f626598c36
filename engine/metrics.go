package engine

import (
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// counter is the part of *metrics.Counter the engine uses.
type counter interface {
	Inc()
	Get() uint64
}

// engineMetrics are the engine's Prometheus metrics, in a *metrics.Set owned by
// the engine (or given in Config.Metrics). Hot-path counts live in the shards as
// atomics and are written out at scrape time.
type engineMetrics struct {
	set *metrics.Set

	broadcasts, publications, privates *metrics.Counter
	dropped, brokerErrors              *metrics.Counter
	messagesIn, authDenials, connects  *metrics.Counter

	requests map[RequestType]*metrics.Counter

	mu          sync.Mutex                  // guards the maps below, filled on first use of a label.
	errors      map[string]*metrics.Counter // by kind
	disconnects map[string]*metrics.Counter // by reason
	upgrades    map[string]*metrics.Counter // upgrade failures by reason
	panics      map[string]*metrics.Counter // recovered panics by where
}

func newEngineMetrics(e *Engine, set *metrics.Set) *engineMetrics {
	if set == nil {
		set = metrics.NewSet()
	}
	m := &engineMetrics{
		set:          set,
		broadcasts:   set.NewCounter(`shardhub_broadcasts_total`),
		publications: set.NewCounter(`shardhub_publications_total`),
		privates:     set.NewCounter(`shardhub_private_messages_total`),
		dropped:      set.NewCounter(`shardhub_dropped_broadcasts_total`),
		brokerErrors: set.NewCounter(`shardhub_broker_errors_total`),
		messagesIn:   set.NewCounter(`shardhub_messages_in_total`),
		authDenials:  set.NewCounter(`shardhub_authorizer_denials_total`),
		connects:     set.NewCounter(`shardhub_connects_total`),
		requests:     make(map[RequestType]*metrics.Counter),
		errors:       make(map[string]*metrics.Counter),
		disconnects:  make(map[string]*metrics.Counter),
		upgrades:     make(map[string]*metrics.Counter),
		panics:       make(map[string]*metrics.Counter),
	}
	for _, t := range []RequestType{RequestSubscribe, RequestUnsubscribe, RequestPublish, RequestSend} {
		m.requests[t] = set.NewCounter(fmt.Sprintf(`shardhub_requests_total{type=%q}`, t.String()))
	}
	// Pre-register the error kinds a client can cause, so dashboards see zeros.
	for _, k := range []ErrorCode{CodeBadJSON, CodeUnknownType, CodeBadRequest, CodeBadChannel, CodeTooLarge,
		CodeForbidden, CodeNotFound, CodeRateLimited, CodeTooManySubs, CodeOverloaded} {
		m.countErrorKindN(string(k), 0)
	}
	for _, k := range []string{"protocol_error", "invalid_utf8", "too_large", "rate_limited"} {
		m.countErrorKindN(k, 0)
	}
	for _, w := range []string{"message", "read_loop", "on_connect", "on_disconnect", "authenticate", "drain"} {
		m.labeled(m.panics, `shardhub_panics_total{where=%q}`, w)
	}
	set.NewGauge(`shardhub_broadcast_queue_length`, func() float64 { return float64(len(e.queue)) })
	set.NewGauge(`shardhub_channels`, func() float64 {
		e.chanMu.Lock()
		defer e.chanMu.Unlock()
		return float64(len(e.chans))
	})
	set.RegisterMetricsWriter(func(w io.Writer) { e.writeShardMetrics(w) })
	return m
}

// writeShardMetrics writes the shards' atomic counters and the ledger at
// scrape time.
func (e *Engine) writeShardMetrics(w io.Writer) {
	var conns, bytes, writeErrs, evicted, registered int64
	for _, s := range e.shards {
		c := s.Counters()
		metrics.WriteGaugeUint64(w, `shardhub_shard_connections{shard="`+strconv.Itoa(s.Index())+`"}`, uint64(max(c.Conns, 0)))
		conns += c.Conns
		bytes += c.Bytes
		writeErrs += c.WriteErrors
		evicted += c.Forced
		registered += c.Registered
	}
	metrics.WriteGaugeUint64(w, `shardhub_connections`, uint64(max(conns, 0)))
	metrics.WriteCounterUint64(w, `shardhub_connections_total`, uint64(registered))
	metrics.WriteCounterUint64(w, `shardhub_bytes_sent_total`, uint64(bytes))
	metrics.WriteCounterUint64(w, `shardhub_write_errors_total`, uint64(writeErrs))
	metrics.WriteCounterUint64(w, `shardhub_forced_disconnects_total`, uint64(evicted))
	l := e.Ledger()
	for src, n := range l.Messages.Received {
		metrics.WriteCounterUint64(w, `shardhub_messages_received_total{source="`+src+`"}`, n)
	}
	metrics.WriteCounterUint64(w, `shardhub_messages_fanned_out_total`, l.Messages.FannedOut)
	metrics.WriteCounterUint64(w, `shardhub_messages_forwarded_total`, l.Messages.Forwarded)
	for r, n := range l.Messages.Dropped {
		metrics.WriteCounterUint64(w, `shardhub_messages_dropped_total{reason="`+r.String()+`"}`, n)
	}
	metrics.WriteCounterUint64(w, `shardhub_deliveries_total`, l.Deliveries.Recipients)
	metrics.WriteCounterUint64(w, `shardhub_messages_sent_total`, l.Deliveries.Written)
	metrics.WriteGaugeUint64(w, `shardhub_deliveries_pending`, l.Deliveries.Pending)
	for r, n := range l.Deliveries.Dropped {
		metrics.WriteCounterUint64(w, `shardhub_deliveries_dropped_total{reason="`+r.String()+`"}`, n)
	}
}

func (m *engineMetrics) countRequest(t RequestType) {
	if c := m.requests[t]; c != nil {
		c.Inc()
	}
}

func (m *engineMetrics) countError(code ErrorCode) { m.countErrorKindN(string(code), 1) }

func (m *engineMetrics) countErrorKind(kind string) { m.countErrorKindN(kind, 1) }

func (m *engineMetrics) countErrorKindN(kind string, n int) {
	m.labeled(m.errors, `shardhub_errors_total{kind=%q}`, kind).Add(n)
}

func (m *engineMetrics) countDisconnect(reason string) {
	m.labeled(m.disconnects, `shardhub_disconnects_total{reason=%q}`, reason).Inc()
}

func (m *engineMetrics) countUpgradeFailure(reason string) {
	m.labeled(m.upgrades, `shardhub_upgrade_failures_total{reason=%q}`, reason).Inc()
}

func (m *engineMetrics) countPanic(where string) {
	m.labeled(m.panics, `shardhub_panics_total{where=%q}`, where).Inc()
}

func (m *engineMetrics) labeled(mp map[string]*metrics.Counter, format, label string) *metrics.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := mp[label]
	if c == nil {
		c = m.set.GetOrCreateCounter(fmt.Sprintf(format, label))
		mp[label] = c
	}
	return c
}

// Metrics returns the engine's metrics set.
func (e *Engine) Metrics() *metrics.Set { return e.metrics.set }

// WritePrometheus writes the engine's metrics in Prometheus text format.
func (e *Engine) WritePrometheus(w io.Writer) { e.metrics.set.WritePrometheus(w) }
