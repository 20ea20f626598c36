package server

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP hardening of the bundled server (docs/security.md).
//
// Every non-WebSocket connection is bounded in time (the timeouts below) and
// in number (HTTPConfig.MaxConns): a WebSocket upgrade leaves the count once
// net/http hands the socket over, and is then bounded by the engine's own
// MaxConnections. At the cap, a new connection takes the place of an idle
// keep-alive one, or of one that has been sending its headers for more than a
// second (a slowloris), or of one whose request has lasted more than two
// seconds (a body trickling in, or never sent), oldest first in that order;
// only when every connection is in a young request is the newcomer refused
// with 503. A health check or a scrape, which sends its request at once and is
// answered in milliseconds, therefore always gets in while clients hold idle,
// half-sent or stalled connections. (A long request of an operator's, such as
// a CPU profile, can be cut short at the cap: it is the price of that promise.)

// Defaults of HTTPConfig.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 15 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHTTPConns      = 256
	// slowHeaders is how long a connection may take to send its request line
	// and headers before a newcomer may take its place at the cap.
	slowHeaders = time.Second
	// slowRequest is how long a request (its body included) may last before a
	// newcomer may take its connection's place at the cap.
	slowRequest = 2 * time.Second
)

// HTTPConfig configures NewHTTPServer. Zero fields take the defaults above.
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration // request line and headers
	ReadTimeout       time.Duration // the whole request, body included
	WriteTimeout      time.Duration // the response
	IdleTimeout       time.Duration // a keep-alive connection between requests
	MaxConns          int           // non-WebSocket connections held at once
	Logger            *slog.Logger  // refusals (rate-limited); nil means slog.Default()
	// OnRefuse is called for each connection refused at the cap (a metric).
	OnRefuse func()
}

func (c HTTPConfig) withDefaults() HTTPConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxHTTPConns
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// HTTPServer is an http.Server with the bundled server's limits, and the
// listener wrapper that enforces the connection cap.
type HTTPServer struct {
	*http.Server
	t *connTracker
}

// NewHTTPServer returns a hardened server for h. Serve it with its Serve
// method, which wraps the listener with the connection cap.
func NewHTTPServer(h http.Handler, cfg HTTPConfig) *HTTPServer {
	cfg = cfg.withDefaults()
	t := &connTracker{max: cfg.MaxConns, conns: make(map[net.Conn]*tracked), log: cfg.Logger, onRefuse: cfg.OnRefuse}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnState:         t.state,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return &HTTPServer{Server: srv, t: t}
}

// Serve accepts connections on ln within the cap.
func (s *HTTPServer) Serve(ln net.Listener) error {
	return s.Server.Serve(&capListener{Listener: ln, t: s.t})
}

// Conns returns the non-WebSocket connections held now.
func (s *HTTPServer) Conns() int {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	return len(s.t.conns)
}

// connTracker follows every connection the HTTP server holds, by state.
type connTracker struct {
	max      int
	log      *slog.Logger
	onRefuse func()
	logged   atomic.Int64 // unix second of the last refusal log line

	mu    sync.Mutex            // guards conns.
	conns map[net.Conn]*tracked // held connections
}

type tracked struct {
	state http.ConnState
	since time.Time // entered state at
}

// admit makes room for c, evicting an idle or slow connection at the cap;
// it reports false when every connection is busy.
func (t *connTracker) admit(c net.Conn) bool {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.conns) >= t.max {
		victim := t.victimLocked(now)
		if victim == nil {
			return false
		}
		delete(t.conns, victim)
		_ = victim.Close()
	}
	t.conns[c] = &tracked{state: http.StateNew, since: now}
	return true
}

// victimLocked picks the oldest idle connection, or else the oldest one still
// sending its headers after slowHeaders, or else the oldest one in a request
// for longer than slowRequest.
func (t *connTracker) victimLocked(now time.Time) net.Conn {
	var pick [3]net.Conn // idle, slow headers, slow request
	var since [3]time.Time
	for c, tr := range t.conns {
		k := -1
		switch age := now.Sub(tr.since); {
		case tr.state == http.StateIdle:
			k = 0
		case tr.state == http.StateNew && age > slowHeaders:
			k = 1
		case tr.state == http.StateActive && age > slowRequest:
			k = 2
		}
		if k >= 0 && (pick[k] == nil || tr.since.Before(since[k])) {
			pick[k], since[k] = c, tr.since
		}
	}
	for _, c := range pick {
		if c != nil {
			return c
		}
	}
	return nil
}

// state is the http.Server's ConnState hook.
func (t *connTracker) state(c net.Conn, st http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch st {
	case http.StateHijacked, http.StateClosed:
		delete(t.conns, c) // a WebSocket now, bounded by the engine; or gone
	default:
		if tr := t.conns[c]; tr != nil {
			tr.state, tr.since = st, time.Now()
		}
	}
}

// refuse answers a connection refused at the cap and closes it.
func (t *connTracker) refuse(c net.Conn) {
	if t.onRefuse != nil {
		t.onRefuse()
	}
	if now := time.Now().Unix(); t.logged.Swap(now) != now {
		t.log.Warn("shardhub: HTTP connection refused: every connection is busy", "max_http_conns", t.max, "remote", c.RemoteAddr().String())
	}
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"))
	_ = c.Close()
}

// capListener admits accepted connections through the tracker.
type capListener struct {
	net.Listener
	t *connTracker
}

// Accept returns the next connection admitted within the cap; refused ones
// are answered 503 and closed on a goroutine of their own.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.t.admit(c) {
			return c, nil
		}
		go l.t.refuse(c)
	}
}
