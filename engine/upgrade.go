package engine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/shard/transport"
)

// ServeHTTP upgrades a WebSocket request and serves the connection until it
// closes. The handler returns right after the upgrade; the connection's read loop
// runs in its own goroutine, so net/http's per-request state is released.
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
		e.cfg.Logger.Info("shardhub: upgrade refused: origin not allowed", "origin", r.Header.Get("Origin"), "host", r.Host, "remote", r.RemoteAddr)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	if !e.admit() {
		e.metrics.countUpgradeFailure("max_connections")
		if now := time.Now().Unix(); e.limitLogged.Swap(now) != now { // one line a second at most
			e.cfg.Logger.Warn("shardhub: upgrade refused: connection limit reached", "limit", e.cfg.MaxConnections, "remote", r.RemoteAddr)
		}
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
	var user string
	if auth := e.cfg.Authenticate; auth != nil {
		u, err := auth(r)
		if err != nil {
			e.metrics.countUpgradeFailure("auth")
			e.cfg.Logger.Info("shardhub: upgrade refused: authentication failed", "remote", r.RemoteAddr, "err", err)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		user = u
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "connection cannot be upgraded", http.StatusInternalServerError)
		return
	}
	netConn, brw, err := hj.Hijack()
	if err != nil {
		e.metrics.countUpgradeFailure("hijack")
		e.cfg.Logger.Info("shardhub: hijack failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	br := brw.Reader
	if br.Buffered() == 0 {
		// The client sent nothing past the request: a small reader of our own keeps
		// an idle connection cheap, and net/http's 4 KiB one is garbage now.
		br = bufio.NewReaderSize(netConn, e.cfg.ReadBufferSize)
	}
	admitted = false
	e.serveConn(netConn, br, r, user)
}

// admit takes one of the MaxConnections slots. serveConn gives it back when the
// connection fails to start or, through readLoop, when it ends.
func (e *Engine) admit() bool {
	n := e.admitted.Add(1)
	if max := e.cfg.MaxConnections; max > 0 && n > int64(max) {
		e.admitted.Add(-1)
		return false
	}
	return true
}

// serveConn completes the upgrade of a hijacked connection and starts its read
// loop.
func (e *Engine) serveConn(netConn net.Conn, br *bufio.Reader, r *http.Request, user string) {
	started := false // the read loop owns the admission slot once it runs
	defer func() {
		if !started {
			e.admitted.Add(-1)
		}
	}()
	c := e.newConn(e.newConnID(), transport.New(netConn))
	c.user = user
	c.wire = wire{Conn: netConn, c: c}
	socket, err := e.upgrader.UpgradeFromConn(&c.wire, br, r)
	if err != nil {
		e.metrics.countUpgradeFailure("handshake")
		e.cfg.Logger.Info("shardhub: upgrade failed", "remote", r.RemoteAddr, "err", err)
		c.sc.Abort()
		return
	}
	c.ws = socket
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
	if e.cfg.PingInterval > 0 {
		c.touch(time.Now())
	}
	if h := e.cfg.Hooks.OnConnect; h != nil {
		if err := h(c); err != nil {
			e.metrics.countUpgradeFailure("on_connect")
			e.cfg.Logger.Info("shardhub: OnConnect rejected connection", "conn", c.ID(), "err", err)
			_ = socket.WriteClose(ClosePolicyViolation, []byte(truncate(err.Error(), 120)))
			started = true
			go c.readLoop() // completes the close handshake, then unregisters
			return
		}
	}
	c.sendEncoded(len(c.ID())+32, func(b []byte) []byte { return e.codec.AppendWelcome(b, c.ID()) })
	e.metrics.connects.Inc()
	started = true
	go c.readLoop()
}

// readLoop runs gws's read loop for the connection. Runs in its own goroutine,
// one per WebSocket connection, until the connection closes.
func (c *Conn) readLoop() {
	defer c.e.admitted.Add(-1)
	defer c.e.readerDone()
	c.ws.ReadLoop()
}

// touch extends the read deadline; called for every inbound frame, it resets the
// timer at most once a second.
func (c *Conn) touch(now time.Time) {
	if c.e.cfg.PingInterval <= 0 {
		return
	}
	if s := uint32(now.Unix()); s != c.deadline {
		c.deadline = s
		_ = c.wire.Conn.SetReadDeadline(now.Add(c.e.cfg.PongWait))
	}
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

// wire is the net.Conn given to gws. Reads go straight to the socket; writes
// (the handshake response, pongs, close frames) join the connection's ordered
// outbound stream, so gws's frames never interleave with the engine's batched
// writes; Close lets that stream drain first.
type wire struct {
	net.Conn
	c *Conn
}

// Write queues b behind the frames already waiting.
func (w *wire) Write(b []byte) (int, error) {
	if err := w.c.sc.WriteRaw(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close closes the connection once what is queued has been written.
func (w *wire) Close() error {
	w.c.sc.CloseAfterFlush()
	return nil
}

// SetWriteDeadline is a no-op: writes never block gws, and the engine bounds its
// own blocking writes with Config.WriteTimeout.
func (w *wire) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only, for the reason given on
// SetWriteDeadline.
func (w *wire) SetDeadline(t time.Time) error { return w.Conn.SetReadDeadline(t) }

// wsHandler receives gws's events for every connection of an engine.
type wsHandler struct{ e *Engine }

func connOf(socket *gws.Conn) *Conn { return socket.NetConn().(*wire).c }

// OnOpen is a no-op: the engine set the connection up before the read loop.
func (wsHandler) OnOpen(*gws.Conn) {}

// OnPing answers with a pong.
func (wsHandler) OnPing(socket *gws.Conn, payload []byte) {
	connOf(socket).touch(time.Now())
	_ = socket.WritePong(payload)
}

// OnPong extends the read deadline.
func (wsHandler) OnPong(socket *gws.Conn, _ []byte) { connOf(socket).touch(time.Now()) }

// OnMessage runs the protocol for one inbound message.
func (wsHandler) OnMessage(socket *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	c := connOf(socket)
	c.touch(time.Now())
	c.handle(msg.Bytes())
}

// OnClose unregisters the connection and reports why it ended.
func (h wsHandler) OnClose(socket *gws.Conn, err error) {
	c := connOf(socket)
	e := h.e
	reason, cause := classifyClose(err)
	if reason == "too_large" || reason == "protocol_error" || reason == "invalid_utf8" {
		c.drainInput()
	}
	c.home().Unregister(&c.sc)
	e.metrics.countDisconnect(reason)
	switch reason {
	case "too_large", "protocol_error", "invalid_utf8":
		e.metrics.countErrorKind(reason)
		e.cfg.Logger.Info("shardhub: connection closed for bad input", "conn", c.ID(), "reason", reason, "err", err)
	case "timeout":
		e.cfg.Logger.Debug("shardhub: connection timed out", "conn", c.ID())
	}
	if h := e.cfg.Hooks.OnDisconnect; h != nil {
		h(c, cause)
	}
}

// drainLinger bounds how long a connection closed for bad input keeps reading.
const drainLinger = 2 * time.Second

// drainInput reads and discards what the peer still sends after the server closed
// the connection for bad input (gws has queued the close frame and the shard
// half-closes once it is written), until the peer closes or drainLinger passes.
// Closing a socket with unread bytes makes the kernel send a reset, and a client
// still sending (a browser in the middle of a 70 KB message) would then see 1006
// instead of the close code.
func (c *Conn) drainInput() {
	_ = c.wire.Conn.SetReadDeadline(time.Now().Add(drainLinger))
	_, _ = io.Copy(io.Discard, c.wire.Conn)
}

// classifyClose names why a connection ended, and returns the error to report
// (nil for a normal close).
func classifyClose(err error) (reason string, cause error) {
	var ce *gws.CloseError
	var code interface{ Uint16() uint16 }
	var ne net.Error
	switch {
	case err == nil:
		return "normal", nil
	case errors.As(err, &ce):
		if ce.Code == CloseNormal || ce.Code == CloseGoingAway || ce.Code == 0 {
			return "normal", nil
		}
		return "peer_error", err
	case errors.Is(err, gws.ErrTextEncoding):
		return "invalid_utf8", err
	case errors.As(err, &code):
		switch code.Uint16() {
		case CloseTooBig:
			return "too_large", err
		case 1002:
			return "protocol_error", err
		case CloseNormal, CloseGoingAway:
			return "normal", nil
		}
		return "closed", err
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout", err
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return "closed", nil
	}
	return "read_error", err
}

// nopSession replaces gws's per-connection session map: the engine keeps its
// state in Conn, so the map would only cost memory.
type nopSession struct{}

func (nopSession) Len() int                     { return 0 }
func (nopSession) Load(string) (any, bool)      { return nil, false }
func (nopSession) Delete(string)                {}
func (nopSession) Store(string, any)            {}
func (nopSession) Range(func(string, any) bool) {}

// gwsLogger routes gws's own error logs to slog.
type gwsLogger struct{ e *Engine }

func (l gwsLogger) Error(v ...any) { l.e.cfg.Logger.Error("gws: " + fmt.Sprint(v...)) }

func (e *Engine) newUpgrader() *gws.Upgrader {
	return gws.NewUpgrader(wsHandler{e}, &gws.ServerOption{
		ReadMaxPayloadSize:  e.cfg.MaxMessageSize,
		ReadBufferSize:      e.cfg.ReadBufferSize,
		WriteMaxPayloadSize: e.cfg.MaxMessageSize + 1024,
		CheckUtf8Enabled:    true,
		HandshakeTimeout:    e.cfg.HandshakeTimeout,
		NewSession:          func() gws.SessionStorage { return nopSession{} },
		Logger:              gwsLogger{e},
		Recovery: func(gws.Logger) {
			// A panicking hook or Authorizer must not take the process down.
			if v := recover(); v != nil {
				e.metrics.countErrorKind("panic")
				e.cfg.Logger.Error("shardhub: panic while handling a message", "panic", v)
			}
		},
	})
}
