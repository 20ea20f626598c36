package engine_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
	"github.com/shardhub/shardhub/shard/transport"
)

// crashFrame is the 14-byte frame that took gws v1.8.9 down: a masked text
// frame whose 64-bit length has its top bit set (2^64-1).
var crashFrame = []byte{0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4}

// TestHostileFramesGetTheirCloseCode sends each malformed input on its own
// connection, alone and pipelined behind the handshake, and checks the close
// code; a bystander keeps getting every publication and nothing panics.
func TestHostileFramesGetTheirCloseCode(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{MaxMessageSize: 4096}, server.Options{})
	bystander := dial(t, ts, "", nil)
	bystander.subscribe("x")
	u64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	hdr64 := func(b0 byte, n uint64) []byte {
		return append(append([]byte{b0, 0xFF}, u64(n)...), 1, 2, 3, 4)
	}
	closeWith := func(p []byte) []byte { return rawFrame(0x8, p, true) }
	tests := []struct {
		name string
		in   []byte
		code uint16
	}{
		{"64-bit length 2^64-1 (the gws crash)", crashFrame, 1002},
		{"64-bit length 2^63", hdr64(0x82, 1<<63), 1002},
		{"64-bit length 2^62, over the limit", hdr64(0x82, 1<<62), 1009},
		{"64-bit length just over the limit", hdr64(0x81, 70000), 1009},
		{"16-bit length over the limit", rawFrame(0x1, make([]byte, 5000), true), 1009},
		{"64-bit length not minimal", hdr64(0x81, 5), 1002},
		{"16-bit length not minimal", []byte{0x81, 0xFE, 0, 5, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'}, 1002},
		{"unmasked", []byte{0x81, 0x01, 'x'}, 1002},
		{"RSV1 without an extension", append([]byte{0xC1}, rawFrame(0x1, []byte("x"), true)[1:]...), 1002},
		{"RSV2", append([]byte{0xA1}, rawFrame(0x1, []byte("x"), true)[1:]...), 1002},
		{"reserved data opcode", rawFrame(0x3, []byte("x"), true), 1002},
		{"reserved control opcode", rawFrame(0xB, nil, true), 1002},
		{"fragmented ping", rawFrame(0x9, nil, false), 1002},
		{"ping with 126 bytes", rawFrame(0x9, make([]byte, 126), true), 1002},
		{"continuation without a message", rawFrame(0x0, []byte("x"), true), 1002},
		{"new message inside a fragmented one", append(rawFrame(0x1, []byte("a"), false), rawFrame(0x1, []byte("b"), true)...), 1002},
		{"fragments over the limit", append(rawFrame(0x2, make([]byte, 3000), false), rawFrame(0x0, make([]byte, 3000), true)...), 1009},
		{"invalid UTF-8 text", rawFrame(0x1, []byte{'{', 0xff, 0xfe}, true), 1007},
		{"overlong UTF-8", rawFrame(0x1, []byte{0xc0, 0xaf}, true), 1007},
		{"UTF-16 surrogate", rawFrame(0x1, []byte{0xed, 0xa0, 0x80}, true), 1007},
		{"close with 1 byte", closeWith([]byte{3}), 1002},
		{"close code 1005", closeWith([]byte{0x03, 0xED}), 1002},
		{"close code 0", closeWith([]byte{0, 0}), 1002},
		{"close code 5000", closeWith([]byte{0x13, 0x88}), 1002},
		{"close reason not UTF-8", closeWith([]byte{0x03, 0xE8, 0xff}), 1007},
	}
	for _, tt := range tests {
		for _, pipelined := range []bool{false, true} {
			var r *rawConn
			if pipelined {
				r = rawDial(t, ts, tt.in)
			} else {
				r = rawDial(t, ts, nil)
				if err := r.write(tt.in); err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
			}
			code, reason, _ := r.closeFrame()
			if code != tt.code {
				t.Errorf("%s (pipelined %v): close %d %q, want %d", tt.name, pipelined, code, reason, tt.code)
			}
			if strings.Contains(reason, "127.0.0.1") || strings.Contains(reason, "Go ") {
				t.Errorf("%s: the close reason leaks internals: %q", tt.name, reason)
			}
		}
	}
	if err := ts.e.Publish("x", []byte(`"still here"`)); err != nil {
		t.Fatal(err)
	}
	if m := bystander.next("message"); string(m.Data) != `"still here"` {
		t.Fatalf("bystander got %+v", m)
	}
	if n := metric(t, ts.e, `shardhub_panics_total{where="read_loop"}`) + metric(t, ts.e, `shardhub_panics_total{where="message"}`); n != 0 {
		t.Fatalf("%v panics recovered", n)
	}
}

// TestCondemnedConnectionIsNotParsed: a client that floods past the rate
// limit and ignores the close is counted and logged once; nothing it sends
// after the close reaches the engine.
func TestCondemnedConnectionIsNotParsed(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	ts := startServer(t, engine.Config{InboundRate: 10, InboundBurst: 10, Logger: logs.logger()}, server.Options{})
	r := rawDial(t, ts, nil)
	msg := rawFrame(0x1, []byte(`{"type":"unsubscribe","channel":"x"}`), true)
	flood := bytes.Repeat(msg, 2000)
	if err := r.write(flood); err != nil {
		t.Fatal(err)
	}
	code, reason, before := r.closeFrame()
	if code != 1008 {
		t.Fatalf("close %d %q, want 1008", code, reason)
	}
	// It keeps sending as if nothing happened.
	for range 5 {
		if r.write(flood) != nil {
			break
		}
	}
	waitFor(t, "the rate-limited disconnect", func() bool {
		return metric(t, ts.e, `shardhub_disconnects_total{reason="rate_limited"}`) == 1
	})
	// Every refused message was counted once and answered with an error
	// frame, except the last, answered by the close; the ten admitted ones got
	// their unsubscribed reply; nothing after the close counts.
	refused := metric(t, ts.e, `shardhub_errors_total{kind="rate_limited"}`)
	if int(refused) != before-10+1 {
		t.Fatalf("%v refusals counted, %d frames before the close (10 of them replies)", refused, before)
	}
	if n := metric(t, ts.e, `shardhub_messages_in_total`); n != 10 {
		t.Fatalf("%v messages reached the protocol, want the 10 within the burst", n)
	}
	if n := logs.count("closing connection for its input"); n != 1 {
		t.Fatalf("%d log lines for one condemned connection", n)
	}
}

// pace sends frame every interval until stop is closed or the connection
// fails, and returns how many it sent.
func pace(r *rawConn, frame []byte, every time.Duration, stop <-chan struct{}) *atomic.Int64 {
	var sent atomic.Int64
	go func() {
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				if r.write(frame) != nil {
					return
				}
				sent.Add(1)
			}
		}
	}()
	return &sent
}

// TestRateLimitCannotBeEvaded: a client sending ten times its limit, which
// keeps some of its messages within the limit all along, is closed; so is a
// ping flood; a client within its limit never is.
func TestRateLimitCannotBeEvaded(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{InboundRate: 20, InboundBurst: 20}, server.Options{})
	stop := make(chan struct{})
	defer close(stop)

	fast := rawDial(t, ts, nil)
	pace(fast, rawFrame(0x1, []byte(`{"type":"unsubscribe","channel":"x"}`), true), 5*time.Millisecond, stop) // 200/s
	pings := rawDial(t, ts, nil)
	pace(pings, rawFrame(0x9, []byte("p"), true), 2*time.Millisecond, stop) // 500/s
	fair := rawDial(t, ts, nil)
	fairSent := pace(fair, rawFrame(0x1, []byte(`{"type":"unsubscribe","channel":"x"}`), true), 100*time.Millisecond, stop) // 10/s

	if code, _, before := fast.closeFrame(); code != 1008 || before < 20 {
		t.Fatalf("fast client: close %d after %d frames, want 1008 after at least the burst", code, before)
	}
	code, _, pongs := pings.closeFrame()
	if code != 1008 {
		t.Fatalf("ping flood: close %d, want 1008", code)
	}
	if pongs < 20 {
		t.Fatalf("only %d pongs before the close: the burst must be answered", pongs)
	}
	// The fair client got one reply per message and is still open.
	for fairSent.Load() < 10 {
		time.Sleep(10 * time.Millisecond)
	}
	for range 10 {
		f, err := fair.readFrame()
		if err != nil || f.op != 0x1 || !bytes.Contains(f.payload, []byte(`"unsubscribed"`)) {
			t.Fatalf("fair client: %q, %v", f.payload, err)
		}
	}
}

// TestByteRateLimit: large messages past the byte budget are refused.
func TestByteRateLimit(t *testing.T) {
	t.Parallel()
	// A byte rate so low that no refill during a slow send (a busy machine)
	// can admit one more message: the burst (the message size) takes one.
	ts := startServer(t, engine.Config{MaxMessageSize: 4096, InboundByteRate: 100}, server.Options{})
	c := dial(t, ts, "", nil)
	big := `{"type":"publish","channel":"x","id":1,"data":"` + strings.Repeat("a", 3900) + `"}`
	for range 10 {
		c.sendRaw([]byte(big))
	}
	acks, refused := 0, 0
	for range 10 {
		m := <-c.msgs
		switch {
		case m.Type == "ack":
			acks++
		case m.Type == "error" && m.Code == "rate_limited":
			refused++
		default:
			t.Fatalf("got %+v", m)
		}
	}
	// The burst is max(2 × 100, 4096) bytes: one message of ~3950 bytes.
	if acks != 1 || refused != 9 {
		t.Fatalf("%d acks, %d refusals; want 1 and 9", acks, refused)
	}
}

// TestSilentClientTimesOut: a client that never answers pings is closed with
// 1001 and a reason that says why, not a Go error with addresses.
func TestSilentClientTimesOut(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{PingInterval: 300 * time.Millisecond, PongWait: time.Second}, server.Options{})
	r := rawDial(t, ts, nil)
	code, reason, _ := r.closeFrame()
	if code != 1001 || reason != "ping timeout" {
		t.Fatalf("close %d %q, want 1001 \"ping timeout\"", code, reason)
	}
	waitFor(t, "the timeout counted", func() bool {
		return metric(t, ts.e, `shardhub_disconnects_total{reason="timeout"}`) == 1
	})
	// A client that answers pings (gws does) stays connected meanwhile.
	c := dial(t, ts, "", nil)
	time.Sleep(2500 * time.Millisecond)
	c.subscribe("alive")
}

// TestPanicsInHooksCloseOnlyThatConnection: OnConnect and Authenticate
// panics are recovered and counted.
func TestPanicsInHooksCloseOnlyThatConnection(t *testing.T) {
	t.Parallel()
	var disconnectPanics atomic.Int64
	cfg := engine.Config{
		Authenticate: func(r *http.Request) (string, error) {
			if r.URL.Query().Get("p") == "auth" {
				panic("auth bug")
			}
			return r.URL.Query().Get("p"), nil
		},
		Hooks: engine.Hooks{
			OnConnect: func(c *engine.Conn) error {
				if c.UserID() == "connect" {
					panic("connect bug")
				}
				return nil
			},
			OnDisconnect: func(*engine.Conn, error) {
				disconnectPanics.Add(1)
				panic("disconnect bug")
			},
		},
	}
	ts := startServer(t, cfg, server.Options{})
	_, resp, err := tryDial(t, ts, "?p=auth", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("panicking Authenticate: %v %v, want 500", resp, err)
	}
	c, _, err := dialNoWelcome(t, ts, "?p=connect", nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := c.closeCode(); code != 1011 {
		t.Fatalf("panicking OnConnect: close %d, want 1011", code)
	}
	ok := dial(t, ts, "?p=fine", nil)
	ok.subscribe("a")
	waitFor(t, "panics counted", func() bool {
		return metric(t, ts.e, `shardhub_panics_total{where="authenticate"}`) == 1 &&
			metric(t, ts.e, `shardhub_panics_total{where="on_connect"}`) == 1 &&
			metric(t, ts.e, `shardhub_panics_total{where="on_disconnect"}`) >= 1
	})
}

// TestConnectionIDsAreUnguessable: ids carry 96 random bits after the
// instance id.
func TestConnectionIDsAreUnguessable(t *testing.T) {
	t.Parallel()
	e, err := engine.New(engine.Config{Logger: quietLogger(), InstanceID: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	seen := map[string]bool{}
	var sink transport.Sink
	for range 2000 {
		c, err := e.Attach("", &sink)
		if err != nil {
			t.Fatal(err)
		}
		id := c.ID()
		rest, ok := strings.CutPrefix(id, "node1-")
		if !ok || len(rest) != 16 {
			t.Fatalf("id %q: want node1-<16 base64url characters>", id)
		}
		if _, err := base64.RawURLEncoding.DecodeString(rest); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		if seen[rest] {
			t.Fatalf("id %q repeated", id)
		}
		seen[rest] = true
	}
}

// TestSystemChannelsAreServerOnly: clients may listen to $ channels, only the
// server publishes there.
func TestSystemChannelsAreServerOnly(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{}, server.Options{})
	c := dial(t, ts, "", nil)
	c.subscribe("$sys.custom")
	c.send(map[string]any{"type": "publish", "channel": "$sys.custom", "data": "fake", "id": 1})
	if m := c.next("error"); m.Code != "forbidden" {
		t.Fatalf("client publish to a $ channel: %+v", m)
	}
	if err := ts.e.Publish("$sys.custom", []byte(`"real"`)); err != nil {
		t.Fatal(err)
	}
	if m := c.next("message"); string(m.Data) != `"real"` {
		t.Fatalf("got %+v", m)
	}
}

// TestNothingInvalidInTextFrames: invalid UTF-8 that arrives where it may
// (binary frames, the HTTP API, server-side Publish) never leaves in a text
// frame.
func TestNothingInvalidInTextFrames(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{}, server.Options{})
	listener := rawDial(t, ts, nil)
	if err := listener.write(rawFrame(0x1, []byte(`{"type":"subscribe","channel":"u"}`), true)); err != nil {
		t.Fatal(err)
	}
	if f, err := listener.readFrame(); err != nil || !bytes.Contains(f.payload, []byte("subscribed")) {
		t.Fatalf("%q %v", f.payload, err)
	}
	pub := dial(t, ts, "", nil)
	inputs := [][]byte{
		[]byte("{\"type\":\"publish\",\"channel\":\"u\",\"data\":\"bad \xff\xfe here\"}"),
		[]byte("{\"type\":\"publish\",\"channel\":\"u\",\"data\":{\"k\xc0\":\"\xed\xa0\x80\"}}"),
	}
	for _, in := range inputs {
		if err := pub.ws.WriteMessage(gws.OpcodeBinary, in); err != nil {
			t.Fatal(err)
		}
	}
	if code, _ := post(t, ts.url("/api/publish?channel=u"), "", "plain \xff text"); code != http.StatusAccepted {
		t.Fatalf("API publish: %d", code)
	}
	if err := ts.e.Publish("u", []byte("[\"\xf0\x28\x8c\xbc\"]")); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		f, err := listener.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if f.op != 0x1 || !utf8.Valid(f.payload) || !json.Valid(f.payload) {
			t.Fatalf("message %d: opcode %d, %q is not valid UTF-8 JSON", i, f.op, f.payload)
		}
		if !bytes.Contains(f.payload, []byte(`\ufffd`)) && !bytes.Contains(f.payload, []byte("\uFFFD")) {
			t.Fatalf("message %d: %q: the invalid bytes should be U+FFFD", i, f.payload)
		}
	}
}

// rawCodec is an embedder's codec that relays broadcast data as is, in text
// frames.
type rawCodec struct{ engine.JSONCodec }

func (rawCodec) AppendBroadcast(dst, data []byte) []byte { return append(dst, data...) }

// TestCustomCodecInvalidTextGoesBinary: a codec's invalid UTF-8 text payload
// leaves in a binary frame, never a text one.
func TestCustomCodecInvalidTextGoesBinary(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{Codec: rawCodec{}}, server.Options{})
	r := rawDial(t, ts, nil)
	for _, data := range []string{"fine", "bad \xff"} {
		if err := ts.e.Broadcast([]byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []byte{0x1, 0x2} {
		f, err := r.readFrame()
		if err != nil || f.op != want {
			t.Fatalf("frame %d: opcode %d (%v), want %d", i, f.op, err, want)
		}
	}
}

// TestGoroutineReader runs the read side's rules on the other driver: a
// goroutine per connection (TLS connections, systems without epoll, or
// ReadPollers < 0) must answer hostile input exactly as the reactor does.
func TestGoroutineReader(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{ReadPollers: -1, MaxMessageSize: 4096, InboundRate: 20, InboundBurst: 20,
		PingInterval: 300 * time.Millisecond, PongWait: time.Second}, server.Options{})
	for _, tt := range []struct {
		name string
		in   []byte
		code uint16
	}{
		{"the gws crash frame", crashFrame, 1002},
		{"too big", rawFrame(0x1, make([]byte, 5000), true), 1009},
		{"invalid UTF-8", rawFrame(0x1, []byte{0xff}, true), 1007},
		{"pipelined behind a valid message", append(rawFrame(0x1, []byte(`{"type":"subscribe","channel":"a"}`), true), crashFrame...), 1002},
		{"a flood", bytes.Repeat(rawFrame(0x1, []byte(`{"type":"unsubscribe","channel":"x"}`), true), 500), 1008},
		{"continuation frames are charged", append(rawFrame(0x1, []byte("{"), false), bytes.Repeat(rawFrame(0x0, nil, false), 500)...), 1008},
	} {
		r := rawDial(t, ts, nil)
		if err := r.write(tt.in); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if code, reason, _ := r.closeFrame(); code != tt.code {
			t.Errorf("%s: close %d %q, want %d", tt.name, code, reason, tt.code)
		}
	}
	silent := rawDial(t, ts, nil)
	if code, reason, _ := silent.closeFrame(); code != 1001 || reason != "ping timeout" {
		t.Errorf("silent client: close %d %q", code, reason)
	}
	c := dial(t, ts, "", nil)
	c.subscribe("fine")
}

// TestMaxChannels: clients cannot make the server hold more channels than
// MaxChannels; joining an existing channel is still fine.
func TestMaxChannels(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{MaxChannels: 5}, server.Options{})
	a, b := dial(t, ts, "", nil), dial(t, ts, "", nil)
	for i := range 5 {
		a.subscribe(fmt.Sprint("ch", i))
	}
	a.send(map[string]any{"type": "subscribe", "channel": "ch5", "id": 1})
	if m := a.next("error"); m.Code != "too_many_channels" {
		t.Fatalf("sixth channel: %+v", m)
	}
	b.subscribe("ch3")
	if got := metric(t, ts.e, `shardhub_errors_total{kind="too_many_channels"}`); got != 1 {
		t.Fatalf("too_many_channels counted %v times", got)
	}
}
