//go:build !linux

package loadtest

import "errors"

// DefaultIO is the I/O model that Config.IO's zero value means: a goroutine
// per connection where epoll is not available.
const DefaultIO = IOGoroutine

// epollSupported says whether IOEpoll works on this system.
const epollSupported = false

var errNoEpoll = errors.New("loadtest: epoll I/O needs Linux")

// epollConn is empty where there is no epoll.
type epollConn struct{}

// pollers cannot be made where there is no epoll; Config.Validate refuses
// IOEpoll first.
type pollers struct{}

func newPollers(*localFleet, int) (*pollers, error) { return nil, errNoEpoll }
func (*pollers) start() error                       { return errNoEpoll }
func (*pollers) hold(*client, int)                  {}
func (*pollers) stop()                              {}
