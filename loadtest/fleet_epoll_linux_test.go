//go:build linux

package loadtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// heldPair hands one end of a Unix socket pair, whose send buffer is tiny,
// to an epoll fleet as its connection 0, and returns the fleet and the other
// end, which plays the server.
func heldPair(t *testing.T) (*localFleet, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's minimum: a few KiB of pongs fill it.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1); err != nil {
		t.Fatal(err)
	}
	conn := func(fd int, name string) net.Conn {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close() // FileConn made its own descriptor
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cc, server := conn(fds[0], "client"), conn(fds[1], "server")
	t.Cleanup(func() { server.Close() })

	f, err := newLocalFleet(Config{IO: IOEpoll, URLs: []string{"ws://127.0.0.1:1/ws"}, Conns: 1, Logger: quietLogger()}.withDefaults(), 0, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.poll.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.stopping.Store(true)
		f.poll.stop()
	})
	c := &client{f: f, ws: &wsConn{nc: cc, br: bufio.NewReader(cc)}, shard: &f.shards[0]}
	f.open.Add(1)
	f.poll.hold(c, 0)
	return f, server
}

// pings returns n ping frames carrying their index, each about 100 bytes.
func pings(from, n int) []byte {
	var b []byte
	for i := from; i < from+n; i++ {
		b = append(b, serverFrame(true, opPing, fmt.Appendf(nil, "%-100d", i))...)
	}
	return b
}

// TestEpollPongsWaitForTheSocket: pongs the socket cannot take at once wait
// for EPOLLOUT and leave in order; a server that never reads them gets its
// connection dropped once 64 KiB wait.
func TestEpollPongsWaitForTheSocket(t *testing.T) {
	t.Parallel()
	f, server := heldPair(t)
	const n = 400 // ~42 KB of pongs: many times the send buffer, within the 64 KiB queue
	go func() { _, _ = server.Write(pings(0, n)) }()
	br := bufio.NewReader(server)
	for i := range n {
		op, p, err := readClientFrame(br)
		if err != nil {
			t.Fatalf("pong %d: %v", i, err)
		}
		if want := fmt.Sprintf("%-100d", i); op != opPong || string(p) != want {
			t.Fatalf("frame %d: op %d %.20q, want a pong %.20q", i, op, p, want)
		}
	}
	if c := f.counts(); c.Open != 1 || c.Dropped != 0 {
		t.Fatalf("open %d dropped %d after the pongs left", c.Open, c.Dropped)
	}
	// Now the server stops reading.
	go func() { _, _ = server.Write(pings(n, 2000)) }()
	waitFor(t, "the connection to be dropped", func() bool { return f.counts().Open == 0 })
	if c := f.counts(); c.Dropped != 1 || c.Errors["pongs_blocked"] != 1 {
		t.Errorf("dropped %d errors %v", c.Dropped, c.Errors)
	}
}
