package shard

import "errors"

// Errors returned by shards and connections.
var (
	// ErrConnClosed is returned when writing to a connection whose send side is
	// closing or closed.
	ErrConnClosed = errors.New("shard: connection closed")
	// ErrQueueFull is returned when a write would overflow a connection's bounded
	// outbound queue; the connection has been evicted as a slow consumer.
	ErrQueueFull = errors.New("shard: outbound queue full, slow consumer evicted")
	// ErrShutdown is returned by requests made after the shard began shutting down.
	ErrShutdown = errors.New("shard: shutting down")
	// ErrInboxFull is returned by TrySend when the shard's inbox is full.
	ErrInboxFull = errors.New("shard: inbox full")
	// ErrDuplicateID is returned by Register for an id already registered.
	ErrDuplicateID = errors.New("shard: duplicate connection id")
)

// ErrTooManySubscriptions is returned by Subscribe past Config.MaxSubscriptions.
var ErrTooManySubscriptions = errors.New("shard: too many subscriptions for one connection")

// errTransportPanic fails a connection whose transport panicked in a write.
var errTransportPanic = errors.New("shard: transport panicked")
