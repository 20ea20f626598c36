package engine

import "errors"

// Errors returned by the engine. Callers compare with errors.Is: some are wrapped
// with context.
var (
	// ErrShutdown is returned by calls made after Shutdown began.
	ErrShutdown = errors.New("shardhub: engine shut down")
	// ErrQueueFull is returned by Broadcast and Publish when the broadcast queue is
	// full, and by Send when the target's shard inbox is full; the message was
	// dropped and counted (shardhub_messages_dropped_total{reason="queue_full"}).
	ErrQueueFull = errors.New("shardhub: broadcast queue full, message dropped")
	// ErrConnNotFound is returned by Send for a connection id that is not connected
	// (to this instance, or to any instance when a broker routes private messages).
	ErrConnNotFound = errors.New("shardhub: connection not found")
	// ErrInvalidChannel is returned for an empty, too long or badly formed channel
	// name (see ValidChannel).
	ErrInvalidChannel = errors.New("shardhub: invalid channel name")
	// ErrMessageTooLarge is returned for a payload above Config.MaxMessageSize.
	ErrMessageTooLarge = errors.New("shardhub: message too large")
	// ErrForbidden is returned (wrapped) when the Authorizer denies an action.
	ErrForbidden = errors.New("shardhub: forbidden")
	// ErrDuplicateConn is returned by Attach for an id that is already connected.
	ErrDuplicateConn = errors.New("shardhub: connection id already in use")
	// ErrInvalidConfig is wrapped by Config.Validate errors, which name the field.
	ErrInvalidConfig = errors.New("shardhub: invalid config")
	// ErrBrokerUnavailable is returned (wrapping the broker's error) when the
	// broker refused a Broadcast or Publish for the other instances: the
	// message reached this instance's connections only (and is counted in the
	// broker's ledger).
	ErrBrokerUnavailable = errors.New("shardhub: broker refused the message; it reached this instance only")
)
