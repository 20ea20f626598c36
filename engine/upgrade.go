package engine

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/shard/transport"
)

// ServeHTTP upgrades a WebSocket request and serves the connection until it
// closes. The handler returns right after the upgrade: the connection is then
// read by the engine's reactor (or a goroutine of its own), so net/http's
// per-request state is released.
func (e *Engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if e.closing.Load() {
		e.metrics.countUpgradeFailure("shutdown")
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	if status, msg := checkHandshake(r); status != 0 {
		e.metrics.countUpgradeFailure("handshake")
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		http.Error(w, msg, status)
		return
	}
	if !e.checkOrigin(r) {
		e.metrics.countUpgradeFailure("origin")
		e.logLimited("upgrade", "shardhub: upgrade refused: origin not allowed", "origin", truncate(r.Header.Get("Origin"), 128), "host", truncate(r.Host, 128), "remote", r.RemoteAddr)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	if !e.admit() {
		e.metrics.countUpgradeFailure("max_connections")
		e.logLimited("max_connections", "shardhub: upgrade refused: connection limit reached", "limit", e.cfg.MaxConnections, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "5")
		http.Error(w, "connection limit reached", http.StatusServiceUnavailable)
		return
	}
	admitted := true // until serveConn owns the slot
	defer func() {
		if admitted {
			e.admitted.Add(-1)
		}
	}()
	user, aerr := e.authenticate(r)
	if aerr != nil {
		e.metrics.countUpgradeFailure("auth")
		e.logLimited("auth", "shardhub: upgrade refused: authentication failed", "remote", r.RemoteAddr, "err", aerr)
		if errors.Is(aerr, errHookPanic) {
			http.Error(w, "internal error", http.StatusInternalServerError)
		} else {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
		}
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "connection cannot be upgraded", http.StatusInternalServerError)
		return
	}
	netConn, brw, err := hj.Hijack()
	if err != nil {
		e.metrics.countUpgradeFailure("hijack")
		e.logLimited("upgrade", "shardhub: hijack failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	// net/http's read and write deadlines (the server's timeouts) must not
	// outlive the request: the engine bounds reads with its idle sweep and
	// writes with WriteTimeout.
	_ = netConn.SetDeadline(time.Time{})
	admitted = false
	e.serveConn(netConn, brw.Reader, r, user)
}

// admit takes one of the MaxConnections slots. serveConn gives it back when the
// connection fails to start or, through its reader (readLoop, or the mailbox's
// mailFinish), when it ends.
func (e *Engine) admit() bool {
	n := e.admitted.Add(1)
	if max := e.cfg.MaxConnections; max > 0 && n > int64(max) {
		e.admitted.Add(-1)
		return false
	}
	return true
}

// serveConn completes the upgrade of a hijacked connection and starts reading
// it.
func (e *Engine) serveConn(netConn net.Conn, br *bufio.Reader, r *http.Request, user string) {
	started := false // the reader owns the admission slot once reading starts
	defer func() {
		if !started {
			e.admitted.Add(-1)
		}
	}()
	t := transport.New(netConn)
	c := e.newConn(e.newConnID(), t)
	c.user = user
	c.nc = netConn
	if _, err := e.upgrader.UpgradeFromConn(&handshakeConn{Conn: netConn, c: c}, br, r); err != nil {
		e.metrics.countUpgradeFailure("handshake")
		e.logLimited("upgrade", "shardhub: upgrade failed", "remote", r.RemoteAddr, "err", err)
		c.sc.Abort()
		return
	}
	// Bytes the client sent right behind its request (its first frames) are
	// in br; the reader takes over from the socket after them.
	var pending []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		pending = append([]byte(nil), b...)
	}
	if err := c.register(); err != nil {
		e.metrics.countUpgradeFailure("shutdown")
		c.sc.Close(CloseGoingAway, "server shutting down")
		return
	}
	if !e.readerStart() {
		c.sc.Close(CloseGoingAway, "server shutting down")
		c.home().Unregister(&c.sc)
		return
	}
	c.sc.Touch(time.Now())
	if err := e.onConnect(c); err != nil {
		e.metrics.countUpgradeFailure("on_connect")
		e.logLimited("on_connect", "shardhub: OnConnect rejected connection", "conn", c.ID(), "err", err)
		code, reason := uint16(ClosePolicyViolation), truncate(err.Error(), 120)
		if errors.Is(err, errHookPanic) {
			code, reason = CloseInternalError, "internal error"
		}
		c.in.state.Store(readDraining)
		c.end("on_connect")
		c.sc.Close(code, reason)
		started = true
		c.startReading(t, nil) // drains until the client closes, then unregisters
		return
	}
	c.sendEncoded(len(c.ID())+32, func(b []byte) []byte { return e.codec.AppendWelcome(b, c.ID()) })
	e.metrics.connects.Inc()
	started = true
	c.startReading(t, pending)
}

// startReading hands the connection to its reader: the reactor for a TCP
// socket when the engine has one, else a goroutine of its own. The reader owns
// the admission slot and the reader count from here on.
func (c *Conn) startReading(t transport.Transport, pending []byte) {
	tcp, ok := t.(pollable)
	if c.e.reactor == nil || !ok {
		go c.readLoop(pending)
		return
	}
	c.in.async = true
	if len(pending) > 0 && c.in.state.Load() == readOpen {
		c.feed(pending, time.Now()) // before a poller owns the parser
	}
	reg, err := c.e.reactor.Register(tcp.RawConn(), (*connPoll)(c))
	if err == nil {
		c.box.reg.Store(reg) // before its first OnData, which may pause it
		err = reg.Start()
	}
	if err != nil {
		// The reactor is closing (shutdown) or epoll refused the socket.
		c.e.logLimited("reactor", "shardhub: cannot poll connection", "conn", c.ID(), "err", err)
		c.end("read_error")
		c.sc.Close(CloseGoingAway, "server shutting down")
		c.mail(mailFinish, nil, 0)
		return
	}
	tcp.BeforeClose(reg.Close)
}

// pollable is a transport the reactor can read (transport.TCP on Linux): it
// lends its raw socket, and lets the reactor stop polling before it closes.
type pollable interface {
	RawConn() syscall.RawConn
	BeforeClose(func())
}

// errHookPanic is what authenticate and onConnect return when the hook
// panicked.
var errHookPanic = errors.New("shardhub: hook panicked")

// authenticate runs Config.Authenticate; a panic in it refuses the upgrade.
func (e *Engine) authenticate(r *http.Request) (user string, err error) {
	auth := e.cfg.Authenticate
	if auth == nil {
		return "", nil
	}
	defer func() {
		if v := recover(); v != nil {
			e.panicked("authenticate", v, "")
			user, err = "", errHookPanic
		}
	}()
	return auth(r)
}

// onConnect runs Hooks.OnConnect; a panic in it refuses the connection.
func (e *Engine) onConnect(c *Conn) (err error) {
	h := e.cfg.Hooks.OnConnect
	if h == nil {
		return nil
	}
	defer func() {
		if v := recover(); v != nil {
			e.panicked("on_connect", v, c.ID())
			err = errHookPanic
		}
	}()
	return h(c)
}

// checkHandshake validates an upgrade request before the connection is hijacked,
// so a bad one gets a proper HTTP error.
func checkHandshake(r *http.Request) (int, string) {
	if r.Method != http.MethodGet {
		return http.StatusMethodNotAllowed, "WebSocket upgrade requires GET"
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return http.StatusUpgradeRequired, "this endpoint speaks WebSocket: send an Upgrade: websocket request"
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version; 13 is required"
	}
	if r.Header.Get("Sec-WebSocket-Key") == "" {
		return http.StatusBadRequest, "missing Sec-WebSocket-Key"
	}
	return 0, ""
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// checkOrigin applies Config.CheckOrigin, or the default same-origin policy.
func (e *Engine) checkOrigin(r *http.Request) bool {
	if e.cfg.CheckOrigin != nil {
		return e.cfg.CheckOrigin(r)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: nothing to protect with an origin check
	}
	for _, o := range e.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// handshakeConn is the net.Conn given to gws for the handshake: its writes (the
// 101 response, or an error) join the connection's ordered outbound stream, and
// its deadlines are ignored (writes never block; the engine bounds its own).
type handshakeConn struct {
	net.Conn
	c *Conn
}

// Write queues b behind the frames already waiting.
func (h *handshakeConn) Write(b []byte) (int, error) {
	if err := h.c.sc.WriteRaw(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close closes the connection once what is queued has been written.
func (h *handshakeConn) Close() error {
	h.c.sc.CloseAfterFlush()
	return nil
}

// SetDeadline is a no-op: see handshakeConn.
func (h *handshakeConn) SetDeadline(time.Time) error { return nil }

// SetWriteDeadline is a no-op: see handshakeConn.
func (h *handshakeConn) SetWriteDeadline(time.Time) error { return nil }

// gwsLogger routes gws's own error logs to slog.
type gwsLogger struct{ e *Engine }

func (l gwsLogger) Error(v ...any) { l.e.logLimited("gws", "gws: "+fmt.Sprint(v...)) }

// gwsEvents satisfies gws.Event for the upgrader. gws only writes the
// handshake: the engine reads connections itself (read.go), so none of these
// is ever called.
type gwsEvents struct{ gws.BuiltinEventHandler }

func (e *Engine) newUpgrader() *gws.Upgrader {
	return gws.NewUpgrader(gwsEvents{}, &gws.ServerOption{
		HandshakeTimeout: e.cfg.HandshakeTimeout,
		NewSession:       func() gws.SessionStorage { return nopSession{} },
		Logger:           gwsLogger{e},
	})
}

// nopSession replaces gws's per-connection session map, which the engine does
// not use.
type nopSession struct{}

func (nopSession) Len() int                     { return 0 }
func (nopSession) Load(string) (any, bool)      { return nil, false }
func (nopSession) Delete(string)                {}
func (nopSession) Store(string, any)            {}
func (nopSession) Range(func(string, any) bool) {}
