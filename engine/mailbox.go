package engine

import (
	"sync"
	"sync/atomic"

	"github.com/shardhub/shardhub/engine/internal/reactor"
	"github.com/shardhub/shardhub/engine/internal/wsread"
)

// The mailbox runs a connection's inbound work when the reactor reads it: the
// poller goroutines must not wait for hooks, the Authorizer or Redis, so each
// message (copied out of the poller's buffer) waits here, and a goroutine
// started for this connection only runs them in order and exits when none is
// left. An idle connection has an empty mailbox and no goroutine.

// Mailbox item kinds.
const (
	mailMessage uint8 = iota // a data message to dispatch
	mailRefused              // a message refused by the rate limit: answer rate_limited
	mailClose                // the peer's close frame (code)
	mailCondemn              // the connection was condemned: send close code with reason
	mailFinish               // reading ended: unregister and report
)

type mailItem struct {
	kind   uint8
	code   uint16
	reason string
	buf    []byte // a pooled copy of the message
}

// mailbox is a connection's inbound work queue. When it holds more than
// mailPauseItems items or mailPauseBytes of message buffers (the connection's
// requests are blocked: a slow hook, Authorizer or Redis), the reactor stops
// reading the connection until it is down to a quarter of that, so the
// kernel's buffers, not the server's memory, hold what the client keeps
// sending.
type mailbox struct {
	mu      sync.Mutex // guards the fields below.
	items   []mailItem
	bytes   int  // capacity of the buffers held by items
	running bool // a goroutine is running the items
	paused  bool // reading is paused (Registration.Pause)

	reg atomic.Pointer[reactor.Registration] // the connection's registration, once polled
}

// Mailbox bounds before reading pauses.
const (
	mailPauseItems = 64
	mailPauseBytes = 1 << 20
)

// mail queues work for the connection's goroutine, starting it if needed.
func (c *Conn) mail(kind uint8, payload []byte, code uint16) {
	c.mailItem(mailItem{kind: kind, code: code}, payload)
}

func (c *Conn) mailItem(it mailItem, payload []byte) {
	kind := it.kind
	if kind == mailMessage {
		it.buf = append(wsread.GetBuffer(len(payload)), payload...)
	}
	m := &c.box
	m.mu.Lock()
	m.items = append(m.items, it)
	m.bytes += cap(it.buf)
	start := !m.running
	m.running = true
	if !m.paused && (len(m.items) > mailPauseItems || m.bytes > mailPauseBytes) {
		if reg := m.reg.Load(); reg != nil {
			m.paused = true
			reg.Pause()
		}
	}
	m.mu.Unlock()
	if start {
		go c.work()
	}
}

// work runs the mailbox until it is empty. Runs in its own goroutine, one per
// connection with work waiting.
func (c *Conn) work() {
	m := &c.box
	for {
		m.mu.Lock()
		if len(m.items) == 0 {
			m.items = nil // an idle connection holds no array
			m.running = false
			m.mu.Unlock()
			return
		}
		it := m.items[0]
		m.items[0] = mailItem{}
		m.items = m.items[1:]
		m.bytes -= cap(it.buf)
		if m.paused && len(m.items) <= mailPauseItems/4 && m.bytes <= mailPauseBytes/4 {
			m.paused = false
			m.reg.Load().Resume()
		}
		m.mu.Unlock()
		switch it.kind {
		case mailMessage:
			c.dispatch(it.buf)
			wsread.PutBuffer(it.buf)
		case mailRefused:
			c.refused()
		case mailClose:
			c.peerClosed(it.code)
		case mailCondemn:
			c.sc.Close(it.code, it.reason)
		case mailFinish:
			c.finish()
			c.e.readerDone()
			c.e.admitted.Add(-1)
		}
	}
}
