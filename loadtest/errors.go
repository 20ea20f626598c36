package loadtest

import "errors"

// Errors returned by Config.Validate and Run. Callers compare with errors.Is;
// most are wrapped with the offending value.
var (
	// ErrInvalidConfig is wrapped by Config.Validate errors, which name the field.
	ErrInvalidConfig = errors.New("loadtest: invalid config")
	// ErrRemoteTarget is returned for a target that is not on a loopback address
	// while Config.AllowRemote is false.
	ErrRemoteTarget = errors.New("loadtest: target is not a loopback address (set AllowRemote / --allow-remote to load a remote host)")
	// ErrTooManyConns is returned when one process would hold more sockets than
	// its open-files limit allows.
	ErrTooManyConns = errors.New("loadtest: more connections per process than the open-files limit allows")
	// ErrWorker is wrapped by failures of a worker process.
	ErrWorker = errors.New("loadtest: worker failed")
)
