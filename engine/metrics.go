package engine

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// engineMetrics are the engine's Prometheus metrics, in a *metrics.Set of the
// engine's own: a second engine (a test, a restart in place) can never collide
// with the first's names. When Config.Metrics is given, the engine's set is
// written into it while the engine runs and not after Shutdown. Hot-path counts
// live in the shards as atomics and are written out at scrape time.
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

// Labels created at zero, so dashboards and alerts see every series from the
// start.
var (
	errorKinds = []string{string(CodeBadJSON), string(CodeUnknownType), string(CodeBadRequest), string(CodeBadChannel),
		string(CodeTooLarge), string(CodeForbidden), string(CodeNotFound), string(CodeRateLimited),
		string(CodeTooManySubs), string(CodeTooManyChannels), string(CodeOverloaded), string(CodeInternal), "protocol_error", "invalid_utf8",
		"recovery_bad_offset", "recovery_failed", "recovery_interrupted"}
	disconnectReasons = []string{"normal", "peer_error", "closed", "read_error", "too_large", "protocol_error",
		"invalid_utf8", "rate_limited", "panic", "on_connect", "timeout", "slow_consumer", "write_error", "shutdown"}
	upgradeReasons = []string{"handshake", "origin", "auth", "max_connections", "shutdown", "hijack", "on_connect"}
	panicPlaces    = []string{"message", "read_loop", "on_connect", "on_disconnect", "authenticate", "drain", "reactor"}
)

func newEngineMetrics(e *Engine, shared *metrics.Set) *engineMetrics {
	set := metrics.NewSet()
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
	for _, k := range errorKinds {
		m.labeled(m.errors, `shardhub_errors_total{kind=%q}`, k)
	}
	for _, r := range disconnectReasons {
		m.labeled(m.disconnects, `shardhub_disconnects_total{reason=%q}`, r)
	}
	for _, r := range upgradeReasons {
		m.labeled(m.upgrades, `shardhub_upgrade_failures_total{reason=%q}`, r)
	}
	for _, w := range panicPlaces {
		m.labeled(m.panics, `shardhub_panics_total{where=%q}`, w)
	}
	set.NewGauge(`shardhub_broadcast_queue_length`, func() float64 { return float64(len(e.queue)) })
	set.NewGauge(`shardhub_client_queue_length`, func() float64 { return float64(len(e.clientQueue)) })
	set.NewGauge(`shardhub_channels`, func() float64 {
		e.chanMu.Lock()
		defer e.chanMu.Unlock()
		return float64(len(e.chans))
	})
	set.RegisterMetricsWriter(func(w io.Writer) { e.writeShardMetrics(w) })
	if shared != nil {
		shared.RegisterMetricsWriter(func(w io.Writer) {
			select {
			case <-e.shutdownDone:
			default:
				e.WritePrometheus(w)
			}
		})
	}
	return m
}

// writeShardMetrics writes the shards' atomic counters and the ledger at
// scrape time, each family's metadata once.
func (e *Engine) writeShardMetrics(w io.Writer) {
	meta := func(name, typ string) { metrics.WriteMetadataIfNeeded(w, name, typ) }
	line := func(name string, v uint64) { fmt.Fprintf(w, "%s %d\n", name, v) }
	var conns, bytes, writeErrs, evicted, registered int64
	meta("shardhub_shard_connections", "gauge")
	for _, s := range e.shards {
		c := s.Counters()
		line(`shardhub_shard_connections{shard="`+strconv.Itoa(s.Index())+`"}`, uint64(max(c.Conns, 0)))
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
	meta("shardhub_messages_received_total", "counter")
	for s := range numSources {
		line(`shardhub_messages_received_total{source="`+s.String()+`"}`, l.Messages.Received[s.String()])
	}
	metrics.WriteCounterUint64(w, `shardhub_messages_fanned_out_total`, l.Messages.FannedOut)
	metrics.WriteCounterUint64(w, `shardhub_messages_forwarded_total`, l.Messages.Forwarded)
	metrics.WriteGaugeUint64(w, `shardhub_messages_queued`, l.Messages.Queued)
	meta("shardhub_messages_dropped_total", "counter")
	for _, r := range []DropReason{DropQueueFull, DropConnClosed, DropBrokerUnavailable, DropShutdown} {
		line(`shardhub_messages_dropped_total{reason="`+r.String()+`"}`, l.Messages.Dropped[r])
	}
	metrics.WriteCounterUint64(w, `shardhub_deliveries_total`, l.Deliveries.Recipients)
	metrics.WriteCounterUint64(w, `shardhub_messages_sent_total`, l.Deliveries.Written)
	metrics.WriteGaugeUint64(w, `shardhub_deliveries_pending`, l.Deliveries.Pending)
	meta("shardhub_deliveries_dropped_total", "counter")
	for _, r := range []DropReason{DropSlowConsumer, DropConnClosed, DropShutdown} {
		line(`shardhub_deliveries_dropped_total{reason="`+r.String()+`"}`, l.Deliveries.Dropped[r])
	}
	if e.reactor != nil {
		metrics.WriteGaugeUint64(w, `shardhub_polled_connections`, uint64(e.reactor.Len()))
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

// WritePrometheus writes the engine's metrics in Prometheus text format. When
// metadata is on (metrics.ExposeMetadata, which the bundled server turns on),
// each family's HELP line says what it counts.
func (e *Engine) WritePrometheus(w io.Writer) {
	var b bytes.Buffer
	e.metrics.set.WritePrometheus(&b)
	for line := range bytes.Lines(b.Bytes()) {
		if fam, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
			name := string(bytes.TrimSpace(fam))
			if h, ok := metricHelp[name]; ok {
				fmt.Fprintf(w, "# HELP %s %s\n", name, h)
				continue
			}
		}
		_, _ = w.Write(line)
	}
}
