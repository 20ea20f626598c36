package engine_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testServer is an engine served on a loopback port with the bundled routes.
type testServer struct {
	e    *engine.Engine
	addr string // host:port
	srv  *http.Server
}

func startServer(tb testing.TB, cfg engine.Config, opts server.Options) *testServer {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	e, err := engine.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	opts.Logger = cfg.Logger
	ts := &testServer{e: e, addr: ln.Addr().String(), srv: &http.Server{Handler: server.Handler(e, opts)}}
	go func() { _ = ts.srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ts.srv.Shutdown(ctx)
		if err := e.Shutdown(ctx); err != nil {
			tb.Errorf("engine shutdown: %v", err)
		}
	})
	return ts
}

func (ts *testServer) url(path string) string { return "http://" + ts.addr + path }

// msg is a decoded server message.
type msg struct {
	Type      string          `json:"type"`
	Conn      string          `json:"conn"`
	Channel   string          `json:"channel"`
	Offset    string          `json:"offset"`
	From      string          `json:"from"`
	Data      json.RawMessage `json:"data"`
	ID        json.RawMessage `json:"id"`
	Code      string          `json:"code"`
	Reason    string          `json:"reason"`
	Recovered *bool           `json:"recovered"`
}

// client is a real gws WebSocket client over loopback.
type client struct {
	tb      testing.TB
	ws      *gws.Conn
	id      string
	msgs    chan msg
	closed  chan struct{}
	closeMu sync.Mutex
	closeEr error
}

type clientHandler struct {
	gws.BuiltinEventHandler
	c *client
}

func (h clientHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	var v msg
	if err := json.Unmarshal(m.Bytes(), &v); err != nil {
		h.c.tb.Errorf("server sent invalid JSON %q: %v", m.Bytes(), err)
		return
	}
	select {
	case h.c.msgs <- v:
	default:
		h.c.tb.Errorf("client inbox overflow")
	}
}

func (h clientHandler) OnClose(_ *gws.Conn, err error) {
	h.c.closeMu.Lock()
	h.c.closeEr = err
	h.c.closeMu.Unlock()
	close(h.c.closed)
}

func dial(tb testing.TB, ts *testServer, query string, header http.Header) *client {
	tb.Helper()
	c, _, err := tryDial(tb, ts, query, header)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	return c
}

func tryDial(tb testing.TB, ts *testServer, query string, header http.Header) (*client, *http.Response, error) {
	tb.Helper()
	c, resp, err := dialNoWelcome(tb, ts, query, header)
	if err != nil {
		return nil, resp, err
	}
	w := c.next("welcome")
	c.id = w.Conn
	return c, resp, nil
}

// dialNoWelcome connects without waiting for the welcome message.
func dialNoWelcome(tb testing.TB, ts *testServer, query string, header http.Header) (*client, *http.Response, error) {
	tb.Helper()
	c := &client{tb: tb, msgs: make(chan msg, 4096), closed: make(chan struct{})}
	ws, resp, err := gws.NewClient(clientHandler{c: c}, &gws.ClientOption{
		Addr:          "ws://" + ts.addr + "/ws" + query,
		RequestHeader: header,
	})
	if err != nil {
		return nil, resp, err
	}
	c.ws = ws
	go ws.ReadLoop()
	tb.Cleanup(func() { ws.NetConn().Close() })
	return c, resp, nil
}

// next returns the next message, which must have type typ.
func (c *client) next(typ string) msg {
	c.tb.Helper()
	select {
	case m := <-c.msgs:
		if m.Type != typ {
			c.tb.Fatalf("got %+v, want a %q message", m, typ)
		}
		return m
	case <-c.closed:
		c.tb.Fatalf("connection closed (%v) while waiting for %q", c.closeErr(), typ)
	case <-time.After(30 * time.Second):
		c.tb.Fatalf("no %q message within 30s", typ)
	}
	return msg{}
}

// none asserts that no message arrives for a short while.
func (c *client) none(within time.Duration) {
	c.tb.Helper()
	select {
	case m := <-c.msgs:
		c.tb.Fatalf("unexpected message %+v", m)
	case <-time.After(within):
	}
}

func (c *client) send(v any) {
	c.tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.tb.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *client) sendRaw(b []byte) {
	c.tb.Helper()
	if err := c.ws.WriteMessage(gws.OpcodeText, b); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

func (c *client) subscribe(channel string) {
	c.tb.Helper()
	c.send(map[string]any{"type": "subscribe", "channel": channel})
	if m := c.next("subscribed"); m.Channel != channel {
		c.tb.Fatalf("subscribed to %q, want %q", m.Channel, channel)
	}
}

func (c *client) closeErr() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	return c.closeEr
}

// closeCode waits for the connection to close and returns the server's close code.
func (c *client) closeCode() uint16 {
	c.tb.Helper()
	select {
	case <-c.closed:
	case <-time.After(30 * time.Second):
		c.tb.Fatal("connection not closed within 30s")
	}
	var ce *gws.CloseError
	if err := c.closeErr(); errors.As(err, &ce) {
		return ce.Code
	}
	c.tb.Fatalf("closed without a close frame: %v", c.closeErr())
	return 0
}

func post(tb testing.TB, url, token, body string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one Prometheus series from the engine's metrics;
// a labelled series not created yet reads as zero.
func metric(tb testing.TB, e *engine.Engine, series string) float64 {
	tb.Helper()
	var sb strings.Builder
	e.WritePrometheus(&sb)
	for _, line := range strings.Split(sb.String(), "\n") {
		if name, val, ok := strings.Cut(line, " "); ok && name == series {
			var f float64
			if err := json.Unmarshal([]byte(val), &f); err != nil {
				tb.Fatalf("series %s value %q: %v", series, val, err)
			}
			return f
		}
	}
	if strings.Contains(series, "{") {
		return 0
	}
	tb.Fatalf("series %s not found in:\n%s", series, sb.String())
	return 0
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rawFrame builds a masked client frame by hand, for inputs a well-behaved client
// library refuses to send.
func rawFrame(op byte, payload []byte, fin bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xFFFF:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}
