package engine

import "context"

// brokerHandler is the engine's side of its Broker: what other instances send
// enters the same encode-once fan-out as local messages.
type brokerHandler struct{ e *Engine }

var _ BrokerHandler = brokerHandler{}

// HandlePublication delivers a publication from another instance.
func (h brokerHandler) HandlePublication(channel, offset string, data []byte) {
	if err := h.e.publishLocal(channel, offset, data); err != nil {
		h.e.cfg.Logger.Debug("shardhub: remote publication not delivered", "channel", channel, "err", err)
	}
}

// HandleBroadcast delivers a broadcast from another instance.
func (h brokerHandler) HandleBroadcast(data []byte) {
	if err := h.e.broadcastLocal(data); err != nil {
		h.e.cfg.Logger.Debug("shardhub: remote broadcast not delivered", "err", err)
	}
}

// HandlePrivate delivers a private message routed here by another instance.
func (h brokerHandler) HandlePrivate(to, from string, data []byte) error {
	return h.e.sendPrivate(context.Background(), &Target{ID: to, Instance: h.e.idPrefix, Local: true}, to, from, data)
}
