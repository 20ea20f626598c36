package redisbroker

import (
	"errors"
	"fmt"

	"github.com/shardhub/shardhub/engine"
)

// Errors returned by the broker. Compare with errors.Is: some are wrapped with
// context.
var (
	// ErrQueueFull is returned by Publish and Broadcast when the publish queue is
	// full: the message reached this instance's subscribers but not Redis. It
	// wraps engine.ErrQueueFull, so clients are told "overloaded".
	ErrQueueFull = fmt.Errorf("redisbroker: publish queue full, message not sent to other instances: %w", engine.ErrQueueFull)
	// ErrUnavailable is returned while Redis is unreachable: the message reached
	// this instance's subscribers only.
	ErrUnavailable = errors.New("redisbroker: redis unavailable, message not sent to other instances")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("redisbroker: closed")
	// ErrInvalidConfig is wrapped by Config.Validate errors, which name the field.
	ErrInvalidConfig = errors.New("redisbroker: invalid config")
	// ErrNotStarted is returned by calls that need Start first.
	ErrNotStarted = errors.New("redisbroker: not started")
)
