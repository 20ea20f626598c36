package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/VictoriaMetrics/metrics"
	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(mainRun{m}) }

// mainRun stops what tests share across inputs (the fuzz server) before the
// leak check.
type mainRun struct{ m *testing.M }

func (r mainRun) Run() int {
	code := r.m.Run()
	stopFuzzServer()
	return code
}

func TestSubscribePublishAck(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{}, server.Options{})
	a, b, other := dial(t, ts, "", nil), dial(t, ts, "", nil), dial(t, ts, "", nil)
	a.subscribe("news")
	b.subscribe("news")
	other.subscribe("sport")

	a.send(map[string]any{"type": "publish", "channel": "news", "data": map[string]int{"x": 1}, "id": 7})
	if m := a.next("ack"); string(m.ID) != "7" {
		t.Fatalf("ack id = %s, want 7", m.ID)
	}
	for _, c := range []*client{a, b} {
		m := c.next("message")
		if m.Channel != "news" || string(m.Data) != `{"x":1}` {
			t.Fatalf("got %+v", m)
		}
	}
	other.none(100 * time.Millisecond)

	// Unsubscribe: b no longer receives.
	b.send(map[string]any{"type": "unsubscribe", "channel": "news", "id": "u1"})
	if m := b.next("unsubscribed"); string(m.ID) != `"u1"` {
		t.Fatalf("unsubscribed id = %s", m.ID)
	}
	a.send(map[string]any{"type": "publish", "channel": "news", "data": "second"})
	if m := a.next("message"); string(m.Data) != `"second"` {
		t.Fatalf("got %+v", m)
	}
	b.none(100 * time.Millisecond)
}

func TestPrivateSendBetweenClients(t *testing.T) {
	t.Parallel()
	// Off by default: refused the same way whether the target exists or not.
	def := startServer(t, engine.Config{}, server.Options{})
	x, y := dial(t, def, "", nil), dial(t, def, "", nil)
	for i, to := range []string{y.id, "nobody-1"} {
		x.send(map[string]any{"type": "send", "to": to, "data": "psst", "id": i})
		if m := x.next("error"); m.Code != "forbidden" || m.Reason != "client-to-client send is disabled on this server" {
			t.Fatalf("send with the default config: %+v", m)
		}
	}
	y.none(100 * time.Millisecond)

	ts := startServer(t, engine.Config{AllowClientSend: true}, server.Options{})
	a, b := dial(t, ts, "", nil), dial(t, ts, "", nil)
	a.send(map[string]any{"type": "send", "to": b.id, "data": "psst", "id": 1})
	a.next("ack")
	m := b.next("private")
	if m.From != a.id || string(m.Data) != `"psst"` {
		t.Fatalf("got %+v, want from %s", m, a.id)
	}
	a.send(map[string]any{"type": "send", "to": "nobody-1", "data": 1, "id": 2})
	if m := a.next("error"); m.Code != "not_found" || string(m.ID) != "2" {
		t.Fatalf("got %+v", m)
	}
	// Server-side Send.
	if err := ts.e.Send(b.id, []byte(`{"from":"server"}`)); err != nil {
		t.Fatal(err)
	}
	if m := b.next("private"); m.From != "" || string(m.Data) != `{"from":"server"}` {
		t.Fatalf("got %+v", m)
	}
	if err := ts.e.Send("missing-9", []byte("x")); !errors.Is(err, engine.ErrConnNotFound) {
		t.Fatalf("Send to missing = %v", err)
	}
}

func TestBroadcastAndHTTPAPI(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{}, server.Options{APIToken: "s3cret"})
	clients := make([]*client, 20)
	for i := range clients {
		clients[i] = dial(t, ts, "", nil)
	}
	clients[0].subscribe("room")

	if code, _ := post(t, ts.url("/api/broadcast"), "", `{"n":1}`); code != http.StatusUnauthorized {
		t.Fatalf("broadcast without token = %d, want 401", code)
	}
	if code, _ := post(t, ts.url("/api/broadcast"), "wrong", `{"n":1}`); code != http.StatusUnauthorized {
		t.Fatalf("broadcast with a wrong token = %d, want 401", code)
	}
	// The answer says how many connections of this instance it was for.
	answer := func(code int, body string) int {
		t.Helper()
		var a struct {
			OK              bool   `json:"ok"`
			LocalRecipients int    `json:"local_recipients"`
			Instance        string `json:"instance"`
		}
		if code != http.StatusAccepted || json.Unmarshal([]byte(body), &a) != nil || !a.OK || a.Instance != ts.e.InstanceID() {
			t.Fatalf("answer %d %s", code, body)
		}
		return a.LocalRecipients
	}
	if n := answer(post(t, ts.url("/api/broadcast"), "s3cret", `{"n":1}`)); n != 20 {
		t.Fatalf("broadcast to %d local recipients, want 20", n)
	}
	for _, c := range clients {
		if m := c.next("message"); m.Channel != "" || string(m.Data) != `{"n":1}` {
			t.Fatalf("got %+v", m)
		}
	}
	// Plain text becomes a JSON string.
	if n := answer(post(t, ts.url("/api/publish?channel=room"), "s3cret", "hello there")); n != 1 {
		t.Fatalf("publish to %d local recipients, want 1", n)
	}
	if m := clients[0].next("message"); m.Channel != "room" || string(m.Data) != `"hello there"` {
		t.Fatalf("got %+v", m)
	}
	clients[1].none(50 * time.Millisecond)

	if n := answer(post(t, ts.url("/api/send?conn="+clients[2].id), "s3cret", `[1,2]`)); n != 1 {
		t.Fatalf("send to %d local recipients, want 1", n)
	}
	if m := clients[2].next("private"); string(m.Data) != `[1,2]` {
		t.Fatalf("got %+v", m)
	}
	for _, tc := range []struct {
		name, path, body string
		want             int
	}{
		{"missing channel", "/api/publish", "x", http.StatusBadRequest},
		{"bad channel", "/api/publish?channel=a%20b", "x", http.StatusBadRequest},
		{"empty body", "/api/broadcast", "", http.StatusBadRequest},
		{"unknown conn", "/api/send?conn=zz", "x", http.StatusNotFound},
		{"too large", "/api/broadcast", strings.Repeat("x", engine.DefaultMaxMessageSize+1), http.StatusRequestEntityTooLarge},
	} {
		if code, body := post(t, ts.url(tc.path), "s3cret", tc.body); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	// Every refused request is counted by its error code.
	for code, want := range map[string]float64{"bad_request": 2, "bad_channel": 1, "not_found": 1, "too_large": 1} {
		if got := metric(t, ts.e, `shardhub_api_errors_total{code="`+code+`"}`); got != want {
			t.Errorf("shardhub_api_errors_total{code=%q} = %v, want %v", code, got, want)
		}
	}

	resp, err := http.Get(ts.url("/api/stats"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		engine.Stats
		Memory server.Memory `json:"memory"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Connections != 20 || len(st.Shards) != ts.e.NumShards() || st.Memory.HeapInuse == 0 || st.Memory.Goroutines == 0 {
		t.Fatalf("stats = %+v", st)
	}
	if got := metric(t, ts.e, "shardhub_broadcasts_total"); got != 1 {
		t.Fatalf("shardhub_broadcasts_total = %v, want 1", got)
	}
}

func TestAuthorizerDenies(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []engine.AuthRequest
	cfg := engine.Config{
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("user"), nil },
		Authorizer: func(_ context.Context, req engine.AuthRequest) error {
			mu.Lock()
			seen = append(seen, req)
			mu.Unlock()
			switch {
			case req.Action == engine.ActionSubscribe && req.Channel == "secret":
				return errors.New("members only")
			case req.Action == engine.ActionPublish && req.Conn.UserID() == "guest":
				return errors.New("guests may not publish")
			case req.Action == engine.ActionSend && req.Target.UserID == "vip":
				return errors.New("nobody messages the vip")
			}
			return nil
		},
	}
	ts := startServer(t, cfg, server.Options{})
	guest, vip, member := dial(t, ts, "?user=guest", nil), dial(t, ts, "?user=vip", nil), dial(t, ts, "?user=member", nil)
	vip.subscribe("open")

	guest.send(map[string]any{"type": "subscribe", "channel": "secret", "id": 1})
	if m := guest.next("error"); m.Code != "forbidden" || m.Reason != "members only" {
		t.Fatalf("got %+v", m)
	}
	guest.send(map[string]any{"type": "publish", "channel": "open", "data": 1})
	if m := guest.next("error"); m.Code != "forbidden" {
		t.Fatalf("got %+v", m)
	}
	// The policy sees the resolved recipient: member writes to vip's connection id.
	member.send(map[string]any{"type": "send", "to": vip.id, "data": "hi"})
	if m := member.next("error"); m.Code != "forbidden" {
		t.Fatalf("got %+v", m)
	}
	vip.none(100 * time.Millisecond) // nothing delivered
	member.send(map[string]any{"type": "send", "to": guest.id, "data": "hi"})
	guest.next("private")

	if got := metric(t, ts.e, "shardhub_authorizer_denials_total"); got != 3 {
		t.Fatalf("denials = %v, want 3", got)
	}
	mu.Lock()
	defer mu.Unlock()
	var sawTarget bool
	for _, r := range seen {
		if r.Action == engine.ActionSend && r.Target != nil && r.Target.ID == vip.id && r.Target.UserID == "vip" && r.Target.Local {
			sawTarget = true
		}
	}
	if !sawTarget {
		t.Fatalf("the authorizer never saw the resolved target: %+v", seen)
	}
}

func TestBadInputGetsErrorFrames(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{}, server.Options{})
	c := dial(t, ts, "", nil)
	tests := []struct {
		name, in, code string
	}{
		{"not json", `hello`, "bad_json"},
		{"json array", `[1,2]`, "bad_json"},
		{"truncated", `{"type":"publish"`, "bad_json"},
		{"unknown type", `{"type":"bogus"}`, "unknown_type"},
		{"no type", `{"channel":"x"}`, "bad_request"},
		{"subscribe without channel", `{"type":"subscribe"}`, "bad_request"},
		{"publish without data", `{"type":"publish","channel":"x"}`, "bad_request"},
		{"send without to", `{"type":"send","data":1}`, "bad_request"},
		{"bad id", `{"type":"subscribe","channel":"x","id":{"a":1}}`, "bad_request"},
		{"channel with space", `{"type":"subscribe","channel":"a b"}`, "bad_channel"},
		{"channel too long", `{"type":"subscribe","channel":"` + strings.Repeat("c", 300) + `"}`, "bad_channel"},
		{"publish to bad channel", `{"type":"publish","channel":"\u0001","data":1}`, "bad_channel"},
	}
	tests = append(tests, []struct {
		name string
		in   string
		code string
	}{
		{"channel of the wrong type", `{"type":"subscribe","channel":5}`, "bad_json"},
		{"type of the wrong type", `{"type":[1]}`, "bad_json"},
		{"array", `[1,2]`, "bad_json"},
	}...)
	for _, tt := range tests {
		c.sendRaw([]byte(tt.in))
		m := c.next("error")
		if m.Code != tt.code || m.Reason == "" {
			t.Errorf("%s: got %+v, want code %s", tt.name, m, tt.code)
		}
		// Reasons speak the protocol, not Go.
		if strings.Contains(m.Reason, "Go ") || strings.Contains(m.Reason, "engine.") || strings.Contains(m.Reason, "json:") {
			t.Errorf("%s: the reason leaks internals: %q", tt.name, m.Reason)
		}
	}
	// The connection still works, and binary frames with JSON are accepted.
	if err := c.ws.WriteMessage(gws.OpcodeBinary, []byte(`{"type":"subscribe","channel":"ok"}`)); err != nil {
		t.Fatal(err)
	}
	c.next("subscribed")
	if got := metric(t, ts.e, `shardhub_errors_total{kind="bad_json"}`); got != 6 {
		t.Fatalf("bad_json errors = %v, want 6", got)
	}
	if got := metric(t, ts.e, `shardhub_errors_total{kind="bad_channel"}`); got != 3 {
		t.Fatalf("bad_channel errors = %v, want 3", got)
	}
}

func TestOversizeMessageCloses1009(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{MaxMessageSize: 1024}, server.Options{})
	bystander := dial(t, ts, "", nil)
	bystander.subscribe("x")
	c := dial(t, ts, "", nil)
	c.sendRaw([]byte(`{"type":"publish","channel":"x","data":"` + strings.Repeat("a", 2000) + `"}`))
	if code := c.closeCode(); code != 1009 {
		t.Fatalf("close code %d, want 1009", code)
	}
	waitFor(t, "too_large counted", func() bool {
		return metric(t, ts.e, `shardhub_errors_total{kind="too_large"}`) == 1
	})
	// Everyone else keeps being served.
	if err := ts.e.Publish("x", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	bystander.next("message")
	// A fragmented message over the limit is refused as well.
	c2 := dial(t, ts, "", nil)
	conn := c2.ws.NetConn()
	part := []byte(strings.Repeat("b", 700))
	if _, err := conn.Write(append(rawFrame(0x1, part, false), rawFrame(0x0, part, true)...)); err != nil {
		t.Fatal(err)
	}
	if code := c2.closeCode(); code != 1009 {
		t.Fatalf("fragmented: close code %d, want 1009", code)
	}
}

func TestMalformedFramesClose(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{}, server.Options{})
	tests := []struct {
		name  string
		bytes []byte
		code  uint16
	}{
		{"invalid utf-8 text", rawFrame(0x1, []byte{0xff, 0xfe, 'x'}, true), 1007},
		{"unmasked frame", []byte{0x81, 0x01, 'x'}, 1002},
		{"fragmented control frame", rawFrame(0x9, nil, false), 1002},
		{"reserved opcode", rawFrame(0x3, []byte("x"), true), 1002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ts, "", nil)
			if _, err := c.ws.NetConn().Write(tt.bytes); err != nil {
				t.Fatal(err)
			}
			if code := c.closeCode(); code != tt.code {
				t.Fatalf("close code %d, want %d", code, tt.code)
			}
		})
	}
	waitFor(t, "protocol errors counted", func() bool {
		return metric(t, ts.e, `shardhub_errors_total{kind="invalid_utf8"}`) == 1 &&
			metric(t, ts.e, `shardhub_errors_total{kind="protocol_error"}`) >= 2
	})
}

func TestInboundRateLimit(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{InboundRate: 1, InboundBurst: 5}, server.Options{})
	c := dial(t, ts, "", nil)
	for range 8 {
		c.sendRaw([]byte(`{"type":"unsubscribe","channel":"x"}`))
	}
	for range 5 {
		c.next("unsubscribed")
	}
	for range 3 {
		if m := c.next("error"); m.Code != "rate_limited" {
			t.Fatalf("got %+v", m)
		}
	}
	// Keep hammering: past the burst of violations the connection is closed.
	for range 10 {
		_ = c.ws.WriteMessage(gws.OpcodeText, []byte(`{"type":"unsubscribe","channel":"x"}`))
	}
	for {
		select {
		case m := <-c.msgs:
			if m.Code != "rate_limited" {
				t.Fatalf("got %+v", m)
			}
			continue
		case <-c.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("not closed")
		}
		break
	}
	if code := c.closeCode(); code != 1008 {
		t.Fatalf("close code %d, want 1008", code)
	}
}

func TestOriginAndTokenChecks(t *testing.T) {
	t.Parallel()
	cfg := engine.Config{
		AllowedOrigins: []string{"https://app.example.com"},
		Authenticate: func(r *http.Request) (string, error) {
			if r.URL.Query().Get("token") != "t0k" {
				return "", errors.New("bad token")
			}
			return "u", nil
		},
	}
	ts := startServer(t, cfg, server.Options{})
	for _, tc := range []struct {
		name, query, origin string
		want                int
	}{
		{"cross origin", "?token=t0k", "https://evil.example.com", http.StatusForbidden},
		{"no token", "", "", http.StatusUnauthorized},
		{"wrong token", "?token=nope", "", http.StatusUnauthorized},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		_, resp, err := tryDial(t, ts, tc.query, h)
		if err == nil || resp == nil || resp.StatusCode != tc.want {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Errorf("%s: err=%v status=%d, want %d", tc.name, err, code, tc.want)
		}
	}
	for _, origin := range []string{"", "https://app.example.com", "http://" + ts.addr} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		dial(t, ts, "?token=t0k", h)
	}
	if got := metric(t, ts.e, `shardhub_upgrade_failures_total{reason="auth"}`); got != 2 {
		t.Fatalf("auth failures = %v, want 2", got)
	}
	// A plain HTTP request to the WebSocket endpoint gets a useful answer.
	resp, err := http.Get(ts.url("/ws"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET /ws = %d, want 426", resp.StatusCode)
	}
}

func TestShutdownSendsGoingAwayToEveryClient(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger(), ShutdownGrace: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: server.Handler(e, server.Options{})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ts := &testServer{e: e, addr: ln.Addr().String()}
	clients := make([]*client, 30)
	for i := range clients {
		clients[i] = dial(t, ts, "", nil)
	}
	start := time.Now()
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		if code := c.closeCode(); code != 1001 {
			t.Fatalf("client %d close code %d, want 1001", i, code)
		}
	}
	// The clients answer the close handshake, so the engine does not need its
	// whole 5s grace window. (Not a speed assertion: a generous bound.)
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("shutdown took %v although every client left", d)
	}
	if err := e.Shutdown(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, _, err := tryDial(t, ts, "", nil); err == nil {
		t.Fatal("dial after shutdown succeeded")
	}
	if err := e.Broadcast([]byte("x")); !errors.Is(err, engine.ErrShutdown) {
		t.Fatalf("Broadcast after shutdown = %v", err)
	}
}

func TestEmptyEngineShutsDownAtOnce(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger(), ShutdownGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("empty engine did not shut down at once: %v", err)
	}
}

// Concurrent shutdowns and stats calls never hang or panic.
func TestConcurrentShutdownAndStats(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{ShutdownGrace: 200 * time.Millisecond}, server.Options{})
	for range 5 {
		dial(t, ts, "", nil)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = ts.e.Shutdown(context.Background())
		}()
		go func() {
			defer wg.Done()
			for range 20 {
				_ = ts.e.Stats()
			}
		}()
	}
	wg.Wait()
}

func TestConfigValidateNamesTheField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cfg   engine.Config
		field string
	}{
		{"negative shards", engine.Config{Shards: -1}, "Shards"},
		{"queue below message", engine.Config{MaxMessageSize: 1 << 20, ConnQueueBytes: 1024}, "ConnQueueBytes"},
		{"pong before ping", engine.Config{PingInterval: time.Minute, PongWait: time.Second}, "PongWait"},
		{"tiny read buffer", engine.Config{ReadBufferSize: 10}, "ReadBufferSize"},
		{"huge message", engine.Config{MaxMessageSize: 1 << 30}, "MaxMessageSize"},
		{"negative grace", engine.Config{ShutdownGrace: -1}, "ShutdownGrace"},
		{"empty origin", engine.Config{AllowedOrigins: []string{""}}, "AllowedOrigins"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if !errors.Is(err, engine.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: Validate() = %v, want an error naming %s", tt.name, err, tt.field)
		}
	}
	if err := (engine.Config{}).Validate(); err != nil {
		t.Fatalf("zero Config invalid: %v", err)
	}
	if _, err := engine.New(engine.Config{Shards: -3}); !errors.Is(err, engine.ErrInvalidConfig) {
		t.Fatalf("New with a bad config = %v", err)
	}
}

func TestSubscriptionLimitAndServerSideSubscribe(t *testing.T) {
	t.Parallel()
	subErr := make(chan error, 1)
	cfg := engine.Config{
		MaxSubscriptions: 2,
		Hooks: engine.Hooks{OnConnect: func(c *engine.Conn) error {
			_, err := c.Subscribe("auto") // the server decides: no Authorizer
			subErr <- err
			return nil
		}},
	}
	ts := startServer(t, cfg, server.Options{})
	c := dial(t, ts, "", nil)
	if err := <-subErr; err != nil {
		t.Fatal(err)
	}
	c.subscribe("a")
	c.send(map[string]any{"type": "subscribe", "channel": "b"})
	if m := c.next("error"); m.Code != "too_many_subscriptions" {
		t.Fatalf("got %+v", m)
	}
	if err := ts.e.Publish("auto", []byte(`"hi"`)); err != nil {
		t.Fatal(err)
	}
	if m := c.next("message"); m.Channel != "auto" {
		t.Fatalf("got %+v", m)
	}
}

func TestHooks(t *testing.T) {
	t.Parallel()
	disconnected := make(chan string, 4)
	cfg := engine.Config{
		Hooks: engine.Hooks{
			OnConnect: func(c *engine.Conn) error {
				if c.UserID() == "banned" {
					return errors.New("banned user")
				}
				return nil
			},
			OnMessage: func(c *engine.Conn, b []byte) bool {
				if string(b) == "ping?" {
					_ = c.Send([]byte(`"pong!"`))
					return true
				}
				if string(b) == "panic" {
					panic("hook bug")
				}
				return false
			},
			OnDisconnect: func(c *engine.Conn, _ error) { disconnected <- c.ID() },
		},
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("user"), nil },
	}
	ts := startServer(t, cfg, server.Options{})
	c := dial(t, ts, "", nil)
	c.sendRaw([]byte("ping?"))
	if m := c.next("private"); string(m.Data) != `"pong!"` {
		t.Fatalf("got %+v", m)
	}
	// A panicking hook is recovered and counted; that connection is closed
	// with 1011, and the server and its other connections live on.
	victim := dial(t, ts, "", nil)
	victim.sendRaw([]byte("panic"))
	if code := victim.closeCode(); code != 1011 {
		t.Fatalf("close code after a panic %d, want 1011", code)
	}
	waitFor(t, "panic counted", func() bool { return metric(t, ts.e, `shardhub_panics_total{where="message"}`) == 1 })
	c.subscribe("still-works")

	banned, _, err := dialNoWelcome(t, ts, "?user=banned", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := banned.closeCode(); code != 1008 {
		t.Fatalf("banned close code %d, want 1008", code)
	}
	if len(banned.msgs) != 0 {
		t.Fatalf("a rejected connection got messages: %+v", <-banned.msgs)
	}
	c.ws.WriteClose(1000, nil)
	seen := map[string]bool{}
	for range 3 {
		select {
		case id := <-disconnected:
			seen[id] = true
		case <-time.After(10 * time.Second):
			t.Fatal("OnDisconnect not called")
		}
	}
	if !seen[c.id] || !seen[victim.id] || len(seen) != 3 {
		t.Fatalf("OnDisconnect saw %v", seen)
	}
}

// Many publishers on one channel: every subscriber gets every message exactly
// once and, per publisher, in order.
func TestConcurrentPublishersOrdering(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{InboundRate: -1}, server.Options{})
	subs := make([]*client, 5)
	for i := range subs {
		subs[i] = dial(t, ts, "", nil)
		subs[i].subscribe("ord")
	}
	const pubs, each = 4, 200
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				for {
					err := ts.e.Publish("ord", fmt.Appendf(nil, `{"p":%d,"i":%d}`, p, i))
					if err == nil {
						break
					}
					if !errors.Is(err, engine.ErrQueueFull) {
						t.Error(err)
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	for s, c := range subs {
		next := make([]int, pubs)
		for range pubs * each {
			m := c.next("message")
			var v struct{ P, I int }
			if err := json.Unmarshal(m.Data, &v); err != nil {
				t.Fatal(err)
			}
			if v.I != next[v.P] {
				t.Fatalf("subscriber %d: publisher %d message %d arrived, want %d", s, v.P, v.I, next[v.P])
			}
			next[v.P]++
		}
		c.none(20 * time.Millisecond)
	}
}

// TestMaxConnections: past the limit an upgrade gets 503 with Retry-After and is
// counted; the connections already open keep working; a slot freed by a
// connection that leaves is usable again.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{MaxConnections: 3}, server.Options{})
	open := []*client{dial(t, ts, "", nil), dial(t, ts, "", nil), dial(t, ts, "", nil)}
	for range 2 {
		_, resp, err := tryDial(t, ts, "", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("4th connection: err=%v resp=%v, want 503", err, resp)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
	}
	if got := metric(t, ts.e, `shardhub_upgrade_failures_total{reason="max_connections"}`); got != 2 {
		t.Fatalf("max_connections failures = %v, want 2", got)
	}
	// The open connections still get broadcasts.
	if err := ts.e.Broadcast([]byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range open {
		c.next("message")
	}
	// One leaves: its slot is free once its read loop has ended.
	_ = open[0].ws.NetConn().Close()
	waitFor(t, "a free slot", func() bool {
		_, _, err := tryDial(t, ts, "", nil) // tryDial waits for the welcome
		return err == nil
	})
	if _, _, err := tryDial(t, ts, "", nil); err == nil {
		t.Fatal("a 5th connection was admitted past the limit of 3")
	}
}

// TestSharedMetricsSet: engines created one after another on one metrics.Set
// do not collide, and a stopped engine's series leave the set's output.
func TestSharedMetricsSet(t *testing.T) {
	t.Parallel()
	shared := metrics.NewSet()
	for i := range 3 {
		e, err := engine.New(engine.Config{Logger: quietLogger(), Metrics: shared, InstanceID: fmt.Sprint("gen", i)})
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		shared.WritePrometheus(&sb)
		if n := strings.Count(sb.String(), "\nshardhub_connections "); n != 1 {
			t.Fatalf("engine %d: shardhub_connections appears %d times in the shared set", i, n)
		}
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var sb strings.Builder
	shared.WritePrometheus(&sb)
	if strings.Contains(sb.String(), "shardhub_") {
		t.Fatalf("stopped engines still write metrics:\n%s", sb.String())
	}
}
