//go:build !linux

package transport

import "net"

// New returns a Transport for c. Outside Linux every write takes the blocking path.
func New(c net.Conn) Transport { return NewConn(c) }
