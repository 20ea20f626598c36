package engine

import (
	"context"

	"github.com/VictoriaMetrics/metrics"
)

// Broker links engines on several hosts or processes into one cluster: a message
// published on any instance reaches the channel's subscribers on all of them.
//
// The engine delivers to its own connections itself and hands the broker what
// other instances need. Methods called from the engine's hot paths (Publish,
// Broadcast, Subscribe, Unsubscribe) must not block on the network: brokers queue
// and batch. The engine calls Subscribe and Unsubscribe in order, for each channel,
// while holding its channel table lock, which BrokerHandler.HandlePublication
// takes too: a broker must not call its handler while holding a lock that
// Subscribe or Unsubscribe take (docs/locking.md).
type Broker interface {
	// Start begins handing messages from other instances to h. The engine calls
	// it once, from New.
	Start(h BrokerHandler) error
	// Publish sends a channel publication to the other instances.
	Publish(channel string, data []byte) error
	// Broadcast sends a message for every connection of the other instances.
	Broadcast(data []byte) error
	// Subscribe is called when this instance gains its first subscriber of
	// channel; Unsubscribe when it loses the last one.
	Subscribe(channel string)
	Unsubscribe(channel string)
	// Close stops the broker. Shutdown calls it last.
	Close() error
}

// BrokerHandler receives what other instances published. The engine implements
// it; its methods are safe for concurrent use and never block on connections.
type BrokerHandler interface {
	// HandlePublication delivers a publication to this instance's subscribers.
	HandlePublication(channel, offset string, data []byte)
	// HandleBroadcast delivers a message to every connection of this instance.
	HandleBroadcast(data []byte)
	// HandlePrivate delivers a private message to connection to, if it is here.
	HandlePrivate(to, from string, data []byte) error
	// InstanceID is this engine's id in the cluster: brokers key their registry
	// entries and their own channel by it, and tag what they publish with it so
	// they can skip their own messages when Redis echoes them back.
	InstanceID() string
	// Metrics is the engine's metrics set, where brokers register theirs so one
	// /metrics page shows both.
	Metrics() *metrics.Set
}

// HistoryBroker is a Broker that keeps a bounded history of some channels, so a
// client that comes back with the offset of the last publication it saw gets
// what it missed (docs/protocol.md, subscribe "since").
//
// Offsets are stream positions of the form "<ms>-<seq>" (Redis stream ids) or
// plain decimal numbers; they grow with every publication of a channel and are
// compared numerically (CompareOffsets).
type HistoryBroker interface {
	Broker
	// HasHistory reports whether channel keeps history. Only the broker can give
	// a publication its offset, so the engine does not deliver publications of
	// such a channel locally itself: the broker hands them back, with their
	// offsets, through BrokerHandler.HandlePublication, on this instance too.
	HasHistory(channel string) bool
	// Hold subscribes this instance to channel (as Subscribe does, counted apart
	// from it) and returns once the subscription is live: every publication
	// after that point reaches HandlePublication. release undoes it and reports
	// whether the subscription stayed live all along (no reconnect in between).
	Hold(ctx context.Context, channel string) (release func() (intact bool), err error)
	// History returns the publications of channel after offset since, oldest
	// first. ok is false when the retained history no longer reaches back to
	// since (or never held it): the client must resync.
	History(ctx context.Context, channel, since string) (pubs []Publication, ok bool, err error)
}

// Publication is one entry of a channel's history.
type Publication struct {
	Offset string
	Data   []byte
}

// Router is implemented by brokers that know which instance holds each
// connection, so Send reaches connections on other instances.
type Router interface {
	// ConnAdded and ConnRemoved keep the cluster's connection registry current.
	// They must not block on the network.
	ConnAdded(id string)
	ConnRemoved(id string)
	// Locate returns the instance holding connection id, or ErrConnNotFound.
	Locate(ctx context.Context, id string) (instance string, err error)
	// SendTo routes a private message to connection to on instance.
	SendTo(ctx context.Context, instance, to, from string, data []byte) error
}

// MemoryBroker is the default broker of a single-node engine: there is no other
// instance, so it only accepts what the engine hands it.
type MemoryBroker struct{}

var _ Broker = MemoryBroker{}

// Start does nothing: no other instance will publish.
func (MemoryBroker) Start(BrokerHandler) error { return nil }

// Publish does nothing: local subscribers are served by the engine itself.
func (MemoryBroker) Publish(string, []byte) error { return nil }

// Broadcast does nothing: local connections are served by the engine itself.
func (MemoryBroker) Broadcast([]byte) error { return nil }

// Subscribe does nothing.
func (MemoryBroker) Subscribe(string) {}

// Unsubscribe does nothing.
func (MemoryBroker) Unsubscribe(string) {}

// Close does nothing.
func (MemoryBroker) Close() error { return nil }
