package redisbroker

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
)

// wedgeProxy forwards TCP to Redis and can wedge the connections that are in
// subscribe mode: they stay open but stop delivering, as a subscriber behind a
// stuck middlebox or a half-dead peer would.
type wedgeProxy struct {
	ln     net.Listener
	target string

	wedgeNew atomic.Bool // wedge each connection as soon as it sends SUBSCRIBE

	mu    sync.Mutex   // guards conns.
	conns []*proxyConn // every connection so far
}

type proxyConn struct {
	pubsub atomic.Bool // the client sent a SUBSCRIBE
	wedged atomic.Bool // stop forwarding Redis → client
}

func newWedgeProxy(tb testing.TB, target string) *wedgeProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &wedgeProxy{ln: ln, target: target}
	tb.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *wedgeProxy) url() string { return "redis://" + p.ln.Addr().String() + "/0" }

// serve accepts connections until the listener closes. Runs in its own goroutine.
func (p *wedgeProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		go func() { // client → Redis, noting SUBSCRIBE
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
						pc.pubsub.Store(true)
						if p.wedgeNew.Load() {
							pc.wedged.Store(true) // before Redis can answer
						}
					}
					if _, werr := s.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			s.Close()
			c.Close()
		}()
		go func() { // Redis → client, dropped once wedged
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && !pc.wedged.Load() {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_, _ = io.Copy(io.Discard, s)
			c.Close()
		}()
	}
}

// wedgeSubscribers wedges every connection now in subscribe mode.
func (p *wedgeProxy) wedgeSubscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		if c.pubsub.Load() && !c.wedged.Load() {
			c.wedged.Store(true)
			n++
		}
	}
	return n
}

func TestWedgedSubscriberIsDetectedAndReplaced(t *testing.T) {
	r := redistest.Start(t)
	proxy := newWedgeProxy(t, r.Addr())
	cfg := fastConfig(proxy.url())
	pub := newNode(t, "pub", fastConfig(r.URL()))
	sub := newNode(t, "sub", cfg)
	c := dial(t, sub)
	c.subscribe("w")
	eventually(t, 5*time.Second, "both instances healthy", func() bool { return pub.b.Healthy() && sub.b.Healthy() })
	if err := pub.e.Publish("w", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if n := dataInt(t, c.next("message")); n != 1 {
		t.Fatal(n)
	}

	if n := proxy.wedgeSubscribers(); n != cfg.PubSubConns {
		t.Fatalf("wedged %d subscriber connections, want %d", n, cfg.PubSubConns)
	}
	// The sockets stay open; only the probe can tell. ProbeTimeout is 1s.
	eventually(t, 5*time.Second, "wedge detected", func() bool {
		return metricValue(t, sub.e.Metrics(), "shardhub_redis_probe_failures_total") >= 1
	})
	eventually(t, 5*time.Second, "subscriber connections replaced", func() bool {
		return sub.b.Healthy() && metricValue(t, sub.e.Metrics(), "shardhub_redis_reconnects_total") >= float64(cfg.PubSubConns)
	})
	if err := pub.e.Publish("w", []byte(`{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	if n := dataInt(t, c.next("message")); n != 2 {
		t.Fatalf("after the wedge, got %d", n)
	}
}

// A subscriber connection wedged before Redis confirmed anything is never live,
// so no probe watches it: it must still be replaced, not wait forever.
func TestSubscriberWedgedBeforeConfirmationIsReplaced(t *testing.T) {
	r := redistest.Start(t)
	proxy := newWedgeProxy(t, r.Addr())
	proxy.wedgeNew.Store(true)
	cfg := fastConfig(proxy.url())
	sub := newNode(t, "sub", cfg)
	// ProbeTimeout is 1s: each connection is given up on after it, twice.
	eventually(t, 8*time.Second, "unconfirmed subscriber connections replaced", func() bool {
		return metricValue(t, sub.e.Metrics(), "shardhub_redis_probe_failures_total") >= float64(2*cfg.PubSubConns)
	})
	if sub.b.Healthy() {
		t.Fatal("healthy while every subscriber connection is wedged")
	}

	proxy.wedgeNew.Store(false)
	eventually(t, 8*time.Second, "healthy once the path to Redis works", sub.b.Healthy)
	pub := newNode(t, "pub", fastConfig(r.URL()))
	c := dial(t, sub)
	c.subscribe("w")
	eventually(t, 5*time.Second, "sub subscribed to ws:ch:w", func() bool { return numsub(t, r, "ws:ch:w") == 1 })
	if err := pub.e.Publish("w", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if n := dataInt(t, c.next("message")); n != 1 {
		t.Fatal(n)
	}
}
