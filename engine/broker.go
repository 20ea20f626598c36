package engine

import "context"

// Broker links engines on several hosts or processes into one cluster: a message
// published on any instance reaches the channel's subscribers on all of them.
//
// The engine delivers to its own connections itself and hands the broker what
// other instances need. Methods called from the engine's hot paths (Publish,
// Broadcast, Subscribe, Unsubscribe) must not block on the network: brokers queue
// and batch. The engine calls Subscribe and Unsubscribe in order, for each channel,
// while holding its channel table lock.
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
