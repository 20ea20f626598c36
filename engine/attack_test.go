package engine_test

// Attacks on the engine's defaults over loopback (docs/security.md is meant to
// list the limits they probe). A TestAttack test that fails names a weakness
// still open; one that passes locks in a protection that held.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// nextDataOrClose returns the next server frame that is not a ping or a pong.
func (r *rawConn) nextDataOrClose() serverFrame {
	r.tb.Helper()
	for {
		f, err := r.readFrame()
		if err != nil {
			r.tb.Fatalf("connection ended without a frame: %v", err)
		}
		if f.op != 0x9 && f.op != 0xA {
			return f
		}
	}
}

// TestAttackContinuationFramesAreCharged: the inbound budget counts "data
// and control frames alike", so a client cannot send an unbounded number of
// frames by putting them inside one fragmented message. Here a message is
// opened and followed by 5000 empty continuation frames (6 bytes each; at
// line rate one connection sent 38 million in 5 s and kept a core busy), then
// completed. At 10 frames/s the connection must be condemned (1008) long
// before the message completes; today none of the continuation frames is
// charged and the completed message is answered as if nothing happened.
func TestAttackContinuationFramesAreCharged(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{InboundRate: 10, InboundBurst: 10, PingInterval: -1}, server.Options{})
	r := rawDial(t, ts, nil)
	var flood bytes.Buffer
	flood.Write(rawFrame(0x1, []byte(`{"type":"unsubscribe",`), false))
	empty := rawFrame(0x0, nil, false)
	for range 5000 {
		flood.Write(empty)
	}
	flood.Write(rawFrame(0x0, []byte(`"channel":"x","id":1}`), true))
	if err := r.write(flood.Bytes()); err != nil {
		t.Fatal(err)
	}
	f := r.nextDataOrClose()
	for f.op == 0x1 && bytes.Contains(f.payload, []byte(`"rate_limited"`)) {
		f = r.nextDataOrClose() // refusals may come before the close
	}
	if f.op != 0x8 {
		t.Fatalf("5001 frames at 10 frames/s were not charged: the server answered %q instead of closing with 1008", f.payload)
	}
	if code := uint16(f.payload[0])<<8 | uint16(f.payload[1]); code != 1008 {
		t.Fatalf("close %d %q, want 1008", code, f.payload[2:])
	}
}

// TestAttackRequestIDEchoIsValidUTF8: binary frames carrying the JSON
// protocol are accepted, and are not checked for UTF-8. The request id is
// echoed raw into replies, which go out in text frames, so a client can make
// the server send invalid UTF-8 in a text frame ("nothing invalid is ever
// relayed in a text frame"); a browser fails such a connection with 1007.
// Every text frame the server sends must be valid UTF-8 (the request may be
// refused instead).
func TestAttackRequestIDEchoIsValidUTF8(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{}, server.Options{})
	for _, id := range [][]byte{{0xff, 0xfe}, {0xed, 0xa0, 0x80}, {0xc0, 0xaf}} {
		r := rawDial(t, ts, nil)
		req := append(append([]byte(`{"type":"subscribe","channel":"x","id":"`), id...), `"}`...)
		if err := r.write(rawFrame(0x2, req, true)); err != nil {
			t.Fatal(err)
		}
		f := r.nextDataOrClose()
		if f.op == 0x1 && !utf8.Valid(f.payload) {
			t.Errorf("id %x: the reply is a text frame with invalid UTF-8: %q", id, f.payload)
		}
	}
}

// TestAttackAuthorizerDenialLogsAreRateLimited: a client whose every request
// is denied must not write a log line per request ("log lines caused by a
// client are rate-limited"). Today each denial logs one Info line.
func TestAttackAuthorizerDenialLogsAreRateLimited(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	deny := func(context.Context, engine.AuthRequest) error { return errors.New("no") }
	ts := startServer(t, engine.Config{Authorizer: deny, InboundRate: -1, Logger: logs.logger()}, server.Options{StatsInterval: -1})
	c := dial(t, ts, "", nil)
	const n = 300
	start := time.Now()
	for i := range n {
		c.send(map[string]any{"type": "subscribe", "channel": fmt.Sprintf("c%d", i)})
	}
	for range n {
		c.next("error")
	}
	// The engine's limiter allows a burst of 20 and 5 lines a second.
	allowed := 20 + int(math.Ceil(5*time.Since(start).Seconds())) + 1
	if got := logs.count("authorizer denied"); got > allowed {
		t.Fatalf("%d log lines for %d denied requests from one client in %v; at most %d allowed", got, n, time.Since(start).Round(time.Millisecond), allowed)
	}
}

// TestAttackControlFramesBetweenFragments: RFC 6455 §5.4 lets control frames
// sit between the fragments of a message; the ping is answered at once and
// the message still arrives whole. (Holds.)
func TestAttackControlFramesBetweenFragments(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{PingInterval: -1}, server.Options{})
	r := rawDial(t, ts, nil)
	in := append(rawFrame(0x1, []byte(`{"type":"subscribe","chan`), false), rawFrame(0x9, []byte("p1"), true)...)
	in = append(in, rawFrame(0x0, []byte("nel\":\"x\",\"id\":\"\xc3"), false)...) // a UTF-8 sequence split across fragments
	in = append(in, rawFrame(0xA, []byte("unsolicited"), true)...)
	in = append(in, rawFrame(0x0, []byte("\xa9\"}"), true)...)
	if err := r.write(in); err != nil {
		t.Fatal(err)
	}
	f, err := r.readFrame()
	if err != nil || f.op != 0xA || string(f.payload) != "p1" {
		t.Fatalf("got %x %q (%v), want the pong p1", f.op, f.payload, err)
	}
	f, err = r.readFrame()
	if err != nil || f.op != 0x1 || !bytes.Contains(f.payload, []byte(`"subscribed"`)) || !bytes.Contains(f.payload, []byte("\xc3\xa9")) {
		t.Fatalf("got %x %q (%v), want the subscribed reply for é", f.op, f.payload, err)
	}
}

// TestAttackLedgerBalancesAfterAbuse: slow consumers evicted, clients that
// vanish mid-stream, a client flooding publications past its rate limit and
// the client queue: at rest every accepted message is accounted for.
// (Holds.)
func TestAttackLedgerBalancesAfterAbuse(t *testing.T) {
	t.Parallel()
	ts := startServer(t, engine.Config{
		MaxMessageSize: 4096, ConnQueueMessages: 8, ConnQueueBytes: 8192,
		ClientPublishQueue: 4, PingInterval: -1,
	}, server.Options{StatsInterval: -1})
	sub := func() *rawConn {
		r := rawDial(t, ts, nil)
		if tc, ok := r.c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(1024) // a client that stopped reading fills its socket quickly
		}
		if err := r.write(rawFrame(0x1, []byte(`{"type":"subscribe","channel":"x"}`), true)); err != nil {
			t.Fatal(err)
		}
		if f := r.nextDataOrClose(); !bytes.Contains(f.payload, []byte("subscribed")) {
			t.Fatalf("got %q", f.payload)
		}
		return r
	}
	var stalled, gone []*rawConn
	for range 5 {
		stalled = append(stalled, sub()) // never read again
		gone = append(gone, sub())
	}
	reader := dial(t, ts, "", nil)
	reader.subscribe("x")
	flooder := rawDial(t, ts, nil)
	pub := rawFrame(0x1, []byte(`{"type":"publish","channel":"x","data":"`+string(bytes.Repeat([]byte("z"), 3000))+`"}`), true)
	go func() { _ = flooder.write(bytes.Repeat(pub, 400)) }()
	for i := range 2000 {
		for ts.e.Publish("x", bytes.Repeat([]byte("y"), 3000)) != nil {
			time.Sleep(time.Millisecond) // dropped (counted): try again, so the stalled ones overflow
		}
		if i == 100 {
			for _, g := range gone {
				if tc, ok := g.c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				g.c.Close()
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !ts.e.Ledger().Balanced || metric(t, ts.e, "shardhub_forced_disconnects_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("not at rest after 30 s: %d slow consumers evicted, ledger %+v",
				int(metric(t, ts.e, "shardhub_forced_disconnects_total")), ts.e.Ledger())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = stalled
}

// TestAttackBlockedConnectionStopsBeingRead: the Authorizer "may block that
// connection only". With the reactor, a connection's messages are copied out
// of the poller's buffer into its mailbox while its goroutine is blocked, and
// the mailbox has no bound: a client keeps sending within its budget (1 MiB/s)
// and every message is copied into a pooled buffer of up to four times its
// size (a 32769-byte message takes a 128 KiB buffer). The blocking reader
// stopped reading instead and let TCP push back. Here one connection sends
// 150 such messages in about 3 s behind a blocked Authorizer; the server must
// stop reading it (or refuse it) before it holds more than a few messages'
// worth of memory, instead of ~19 MiB.
func TestAttackBlockedConnectionStopsBeingRead(t *testing.T) {
	release := make(chan struct{})
	block := func(ctx context.Context, _ engine.AuthRequest) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	ts := startServer(t, engine.Config{Authorizer: block, PingInterval: -1}, server.Options{StatsInterval: -1})
	t.Cleanup(func() { close(release) })
	r := rawDial(t, ts, nil)
	msg := rawFrame(0x1, []byte(`{"type":"publish","channel":"x","data":"`+string(bytes.Repeat([]byte("z"), 32769-40))+`"}`), true)
	before := heapInUse()
	start := time.Now()
	sent := 0
	for i := range 150 {
		// Within both budgets: the burst (2 MiB) at once, then 1 MiB/s.
		if i >= 60 {
			time.Sleep(time.Until(start.Add(time.Duration(i-60) * 33 * time.Millisecond)))
		}
		_ = r.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := r.c.Write(msg); err != nil {
			break // the server pushes back: what we want
		}
		sent++
	}
	time.Sleep(200 * time.Millisecond)
	grown := int64(heapInUse()) - int64(before)
	if grown > 8<<20 {
		t.Fatalf("one connection blocked in its Authorizer made the server hold %d MiB more (%d messages of %d bytes sent in %v)",
			grown>>20, sent, len(msg), time.Since(start).Round(time.Millisecond))
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
