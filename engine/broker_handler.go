package engine

import (
	"context"

	"github.com/VictoriaMetrics/metrics"
)

// brokerHandler is the engine's side of its Broker: what other instances send
// enters the same encode-once fan-out as local messages.
type brokerHandler struct{ e *Engine }

var _ BrokerHandler = brokerHandler{}

// HandlePublication delivers a publication from another instance, or one of this
// instance's on a history channel (which comes back with its offset).
func (h brokerHandler) HandlePublication(channel, offset string, data []byte) {
	if err := h.e.publishLocal(srcBroker, channel, offset, data); err != nil {
		h.e.logLimited("broker_in", "shardhub: publication from the broker not delivered", "channel", channel, "err", err)
	}
}

// HandleBroadcast delivers a broadcast from another instance.
func (h brokerHandler) HandleBroadcast(data []byte) {
	if err := h.e.broadcastLocal(srcBroker, data); err != nil {
		h.e.logLimited("broker_in", "shardhub: broadcast from the broker not delivered", "err", err)
	}
}

// HandlePrivate delivers a private message routed here by another instance.
func (h brokerHandler) HandlePrivate(to, from string, data []byte) error {
	return h.e.sendPrivate(context.Background(), srcBroker, &Target{ID: to, Instance: h.e.idPrefix, Local: true}, to, from, data)
}

// InstanceID returns the engine's instance id.
func (h brokerHandler) InstanceID() string { return h.e.idPrefix }

// Metrics returns the engine's metrics set.
func (h brokerHandler) Metrics() *metrics.Set { return h.e.metrics.set }
