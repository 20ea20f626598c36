package bench

import (
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardhub/shardhub/shard/frame"
)

// broadcaster is one way of writing broadcasts to the benchmark's sockets: the
// shardhub engine, the raw write ceiling, or the naive hub.
type broadcaster interface {
	// broadcast sends payload (a JSON object) to every connection.
	broadcast(payload []byte)
	// stop ends the mode; it must not close the sockets.
	stop()
}

// rawCeiling writes to the sockets with no hub at all: each broadcast is
// encoded once into a shared log, and GOMAXPROCS writer goroutines each own a
// slice of the sockets and write everything pending for a socket in one writev.
// It is the fastest a Go server can put these frames on these sockets, the
// yardstick for the engine's efficiency.
type rawCeiling struct {
	mu     sync.Mutex // guards log and closed; cond signals a new frame or stop.
	cond   *sync.Cond
	log    [][]byte // encoded frames of this phase, in order
	closed bool
	wg     sync.WaitGroup
	writes atomic.Int64
}

func newRawCeiling(conns []net.Conn, writers int) *rawCeiling {
	r := &rawCeiling{}
	r.cond = sync.NewCond(&r.mu)
	for w := range writers {
		var mine []net.Conn
		for i := w; i < len(conns); i += writers {
			mine = append(mine, conns[i])
		}
		r.wg.Add(1)
		go r.writer(mine)
	}
	return r
}

// writer writes every pending frame to each of its sockets in one call per
// socket, then waits for more. Runs in its own goroutine until stop.
func (r *rawCeiling) writer(conns []net.Conn) {
	defer r.wg.Done()
	done := 0
	bufs := make(net.Buffers, 0, 256)
	for {
		r.mu.Lock()
		for len(r.log) == done && !r.closed {
			r.cond.Wait()
		}
		if r.closed && len(r.log) == done {
			r.mu.Unlock()
			return
		}
		pending := r.log[done:]
		r.mu.Unlock()
		for _, c := range conns {
			bufs = append(bufs[:0], pending...)
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := bufs.WriteTo(c); err == nil {
				r.writes.Add(1)
			}
		}
		done += len(pending)
	}
}

func (r *rawCeiling) broadcast(payload []byte) {
	f := frame.New(len(payload) + 32)
	f.SetPayload(append(append(append(f.Payload(), `{"type":"message","data":`...), payload...), '}'))
	f.Seal(frame.OpText)
	r.mu.Lock()
	r.log = append(r.log, f.Bytes()) // never released: the log lives for the phase
	r.mu.Unlock()
	r.cond.Broadcast()
}

func (r *rawCeiling) stop() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cond.Broadcast()
	r.wg.Wait()
}

// naiveHub is the classic gorilla-chat design: one hub goroutine owns one map
// of clients; for every broadcast it encodes the message once per recipient and
// hands it to each client's buffered channel (a full channel drops the client),
// and every client has a writer goroutine that writes one frame per message.
type naiveHub struct {
	in      chan []byte
	clients map[*naiveClient]bool
	done    chan struct{}
	wg      sync.WaitGroup
	dropped atomic.Int64
}

type naiveClient struct {
	conn net.Conn
	send chan []byte
}

// naiveEnvelope is re-marshalled for every recipient, as chat examples do.
type naiveEnvelope struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

func newNaiveHub(conns []net.Conn) *naiveHub {
	h := &naiveHub{in: make(chan []byte, 256), clients: make(map[*naiveClient]bool, len(conns)), done: make(chan struct{})}
	for _, c := range conns {
		nc := &naiveClient{conn: c, send: make(chan []byte, 256)}
		h.clients[nc] = true
		h.wg.Add(1)
		go h.writePump(nc)
	}
	h.wg.Add(1)
	go h.run()
	return h
}

// run is the hub goroutine. Runs until stop.
func (h *naiveHub) run() {
	defer h.wg.Done()
	for {
		select {
		case payload := <-h.in:
			for c := range h.clients {
				msg, _ := json.Marshal(naiveEnvelope{Type: "message", Data: payload})
				select {
				case c.send <- msg:
				default:
					h.dropped.Add(1)
					close(c.send)
					delete(h.clients, c)
				}
			}
		case <-h.done:
			for c := range h.clients {
				close(c.send)
			}
			return
		}
	}
}

// writePump writes one frame per message. Runs in its own goroutine per client.
func (h *naiveHub) writePump(c *naiveClient) {
	defer h.wg.Done()
	buf := make([]byte, 0, 256)
	for msg := range c.send {
		var hdr [frame.MaxHeaderLen]byte
		n := frame.PutHeader(hdr[:], frame.OpText, len(msg))
		buf = append(append(buf[:0], hdr[:n]...), msg...)
		_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.conn.Write(buf); err != nil {
			for range c.send { // keep draining so the hub never blocks
			}
			return
		}
	}
}

func (h *naiveHub) broadcast(payload []byte) {
	h.in <- append([]byte(nil), payload...) // the caller reuses its buffer
}

func (h *naiveHub) stop() {
	close(h.done)
	h.wg.Wait()
}
