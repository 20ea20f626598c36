package redisbroker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
	"github.com/shardhub/shardhub/engine/server"
)

// fastConfig has short periods so tests see expiry and reconnects quickly.
func fastConfig(url string) Config {
	return Config{
		URL:               url,
		PubSubConns:       2,
		InstanceTTL:       time.Second,
		HeartbeatInterval: 300 * time.Millisecond,
		ConnTTL:           1500 * time.Millisecond,
		ConnRefresh:       500 * time.Millisecond,
		RegistryFlush:     20 * time.Millisecond,
		ProbeInterval:     200 * time.Millisecond,
		ProbeTimeout:      time.Second,
		ReconnectMin:      20 * time.Millisecond,
		ReconnectMax:      200 * time.Millisecond,
	}
}

// node is one engine with a Redis broker, served over loopback.
type node struct {
	tb  testing.TB
	e   *engine.Engine
	b   *Broker
	srv *httptest.Server
}

func newNode(tb testing.TB, id string, cfg Config) *node {
	tb.Helper()
	return newNodeWith(tb, id, cfg, engine.Config{}, server.Options{})
}

// newNodeWith is newNode with engine and server settings (Broker, InstanceID,
// Shards, InboundRate and AllowClientSend, Health and Cluster are set here).
func newNodeWith(tb testing.TB, id string, cfg Config, ecfg engine.Config, opts server.Options) *node {
	tb.Helper()
	b, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ecfg.Broker, ecfg.InstanceID, ecfg.Shards, ecfg.InboundRate, ecfg.AllowClientSend = b, id, 4, -1, true
	e, err := engine.New(ecfg)
	if err != nil {
		tb.Fatal(err)
	}
	n := &node{tb: tb, e: e, b: b}
	opts.Health, opts.Cluster = b.Health, b.Cluster
	n.srv = httptest.NewServer(server.Handler(e, opts))
	tb.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.e.Shutdown(ctx)
	n.srv.Close()
}

func (n *node) getJSON(path string, v any) int {
	n.tb.Helper()
	resp, err := http.Get(n.srv.URL + path)
	if err != nil {
		n.tb.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		n.tb.Fatal(err)
	}
	return resp.StatusCode
}

// msg is a server message of the default protocol.
type msg struct {
	Type      string          `json:"type"`
	Conn      string          `json:"conn"`
	Channel   string          `json:"channel"`
	Offset    string          `json:"offset"`
	From      string          `json:"from"`
	Data      json.RawMessage `json:"data"`
	Recovered *bool           `json:"recovered"`
	Code      string          `json:"code"`
	Reason    string          `json:"reason"`
}

// client is a real WebSocket client (gws).
type client struct {
	tb     testing.TB
	id     string
	ws     *gws.Conn
	msgs   chan msg
	closed chan struct{}
}

type clientHandler struct{ c *client }

func (clientHandler) OnOpen(*gws.Conn)             {}
func (clientHandler) OnPing(s *gws.Conn, p []byte) { _ = s.WritePong(p) }
func (clientHandler) OnPong(*gws.Conn, []byte)     {}
func (h clientHandler) OnClose(*gws.Conn, error)   { close(h.c.closed) }
func (h clientHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	var v msg
	if err := json.Unmarshal(m.Bytes(), &v); err != nil {
		v = msg{Type: "undecodable", Reason: m.Data.String()}
	}
	select {
	case h.c.msgs <- v:
	default:
		v.Type = "overflow"
	}
}

func dial(tb testing.TB, n *node) *client {
	tb.Helper()
	c := &client{tb: tb, msgs: make(chan msg, 1<<14), closed: make(chan struct{})}
	ws, _, err := gws.NewClient(clientHandler{c}, &gws.ClientOption{Addr: "ws" + strings.TrimPrefix(n.srv.URL, "http") + "/ws"})
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	c.ws = ws
	go ws.ReadLoop()
	tb.Cleanup(func() { ws.NetConn().Close() })
	c.id = c.next("welcome").Conn
	return c
}

func (c *client) next(typ string) msg {
	c.tb.Helper()
	select {
	case m := <-c.msgs:
		if m.Type != typ {
			c.tb.Fatalf("client %s: got %+v, want a %q message", c.id, m, typ)
		}
		return m
	case <-c.closed:
		c.tb.Fatalf("client %s: closed while waiting for %q", c.id, typ)
	case <-time.After(10 * time.Second):
		c.tb.Fatalf("client %s: no %q message within 10s", c.id, typ)
	}
	return msg{}
}

// none asserts nothing arrives for a while.
func (c *client) none(within time.Duration) {
	c.tb.Helper()
	select {
	case m := <-c.msgs:
		c.tb.Fatalf("client %s: unexpected %+v", c.id, m)
	case <-time.After(within):
	}
}

func (c *client) send(v any) {
	c.tb.Helper()
	b, _ := json.Marshal(v)
	if err := c.ws.WriteMessage(gws.OpcodeText, b); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

func (c *client) subscribe(channel string) msg {
	c.tb.Helper()
	c.send(map[string]any{"type": "subscribe", "channel": channel})
	return c.next("subscribed")
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// numsub returns how many Redis subscribers channel has.
func numsub(tb testing.TB, r *redistest.Server, redisChannel string) int {
	tb.Helper()
	out, err := r.Client().PubSubNumSub(context.Background(), redisChannel).Result()
	if err != nil {
		tb.Fatalf("PUBSUB NUMSUB: %v", err)
	}
	return int(out[redisChannel])
}

func pubsubChannels(tb testing.TB, r *redistest.Server, pattern string) []string {
	tb.Helper()
	out, err := r.Client().PubSubChannels(context.Background(), pattern).Result()
	if err != nil {
		tb.Fatalf("PUBSUB CHANNELS: %v", err)
	}
	slices.Sort(out)
	return out
}

// exists reports whether key exists.
func exists(tb testing.TB, r *redistest.Server, key string) bool {
	tb.Helper()
	n, err := r.Client().Exists(context.Background(), key).Result()
	if err != nil {
		tb.Fatalf("EXISTS %s: %v", key, err)
	}
	return n == 1
}
