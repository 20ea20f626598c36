//go:build !linux

package reactor

import "syscall"

// Reactor is unavailable here: New fails with ErrUnsupported and the engine
// reads each connection with a goroutine of its own.
type Reactor struct{}

// Registration is unavailable here.
type Registration struct{}

// New fails with ErrUnsupported.
func New(Config) (*Reactor, error) { return nil, ErrUnsupported }

// Add fails with ErrUnsupported.
func (r *Reactor) Add(syscall.RawConn, Handler) (*Registration, error) { return nil, ErrUnsupported }

// Register fails with ErrUnsupported.
func (r *Reactor) Register(syscall.RawConn, Handler) (*Registration, error) {
	return nil, ErrUnsupported
}

// Start fails with ErrUnsupported.
func (reg *Registration) Start() error { return ErrUnsupported }

// Close does nothing.
func (r *Reactor) Close() {}

// Len returns 0.
func (r *Reactor) Len() int { return 0 }

// Close does nothing.
func (reg *Registration) Close() {}

// Pause does nothing.
func (reg *Registration) Pause() {}

// Resume does nothing.
func (reg *Registration) Resume() {}
