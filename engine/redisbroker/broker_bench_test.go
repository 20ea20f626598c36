package redisbroker

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
	"github.com/shardhub/shardhub/engine/server"
)

// countingHandler is a BrokerHandler that counts what other instances send.
type countingHandler struct {
	id   string
	set  *metrics.Set
	pubs atomic.Int64
}

func (h *countingHandler) HandlePublication(string, string, []byte) { h.pubs.Add(1) }
func (h *countingHandler) HandleBroadcast([]byte)                   { h.pubs.Add(1) }
func (h *countingHandler) HandlePrivate(string, string, []byte) error {
	return nil
}
func (h *countingHandler) InstanceID() string    { return h.id }
func (h *countingHandler) Metrics() *metrics.Set { return h.set }

func startBroker(tb testing.TB, url, id string, rules ...HistoryRule) (*Broker, *countingHandler) {
	tb.Helper()
	cfg := Config{URL: url, ProbeInterval: -1, Logger: slog.New(slog.DiscardHandler), History: rules}
	b, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	h := &countingHandler{id: id, set: metrics.NewSet()}
	if err := b.Start(h); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b, h
}

// publishAll publishes n messages as fast as the queues take them, retrying
// while they are full, and waits until the writers have sent them all.
func publishAll(b *testing.B, br *Broker, channel string, payload []byte) {
	for i := 0; i < b.N; {
		err := br.Publish(channel, payload)
		switch {
		case err == nil:
			i++
		case errors.Is(err, ErrQueueFull):
			time.Sleep(50 * time.Microsecond)
		default:
			b.Fatal(err)
		}
	}
	for int(br.m.published.Get()) < b.N {
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkPublish measures messages/s one instance gets into Redis (PUBLISH,
// pipelined by the writers), with nobody subscribed.
func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{16, 128, 1024} {
		b.Run(itoa(int64(size))+"B", func(b *testing.B) {
			r := redistest.Start(b)
			br, _ := startBroker(b, r.URL(), "bench")
			payload := make([]byte, size)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			publishAll(b, br, "bench", payload)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkPublishHistory measures messages/s into Redis on a history channel:
// one EVALSHA (XREVRANGE, XADD MAXLEN 100, PEXPIRE, PUBLISH) per message.
func BenchmarkPublishHistory(b *testing.B) {
	r := redistest.Start(b)
	br, _ := startBroker(b, r.URL(), "bench", HistoryRule{Prefix: "h.", Size: 100, TTL: time.Minute})
	payload := make([]byte, 128)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	publishAll(b, br, "h.bench", payload)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkPublishDelivered measures messages/s from one instance's Publish to
// another instance's handler, through Redis.
func BenchmarkPublishDelivered(b *testing.B) {
	r := redistest.Start(b)
	pub, _ := startBroker(b, r.URL(), "pub")
	sub, h := startBroker(b, r.URL(), "sub")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	release, err := sub.Hold(ctx, "bench")
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	payload := make([]byte, 128)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	publishAll(b, pub, "bench", payload)
	deadline := time.Now().Add(30 * time.Second)
	for int(h.pubs.Load()) < b.N && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(h.pubs.Load())/time.Since(start).Seconds(), "msgs/s")
	b.ReportMetric(float64(int64(b.N)-h.pubs.Load()), "lost")
}

// latencyClient records, for each message, now minus the send time in its data.
type latencyClient struct {
	lat  []time.Duration
	got  atomic.Int64
	done chan struct{}
	want int64
}

func (*latencyClient) OnOpen(*gws.Conn)             {}
func (*latencyClient) OnClose(*gws.Conn, error)     {}
func (*latencyClient) OnPing(s *gws.Conn, p []byte) { _ = s.WritePong(p) }
func (*latencyClient) OnPong(*gws.Conn, []byte)     {}
func (c *latencyClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	b := string(m.Bytes())
	i := strings.LastIndex(b, `"data":`)
	if i < 0 || !strings.Contains(b, `"channel"`) {
		return // welcome, subscribed
	}
	sent, err := strconv.ParseInt(strings.TrimSuffix(b[i+7:], "}"), 10, 64)
	if err != nil {
		return
	}
	c.lat = append(c.lat, time.Duration(time.Now().UnixNano()-sent))
	if c.got.Add(1) == c.want {
		close(c.done)
	}
}

// benchLatency publishes b.N messages at rate per second on pubE and measures
// their latency at a WebSocket client of subE.
func benchLatency(b *testing.B, pubE, subE *engine.Engine, rate int) {
	srv := httptest.NewServer(server.Handler(subE, server.Options{}))
	defer srv.Close()
	lc := &latencyClient{done: make(chan struct{}), want: int64(b.N), lat: make([]time.Duration, 0, b.N)}
	ws, _, err := gws.NewClient(lc, &gws.ClientOption{Addr: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"})
	if err != nil {
		b.Fatal(err)
	}
	defer ws.NetConn().Close()
	go ws.ReadLoop()
	_ = ws.WriteMessage(gws.OpcodeText, []byte(`{"type":"subscribe","channel":"lat","id":1}`))
	time.Sleep(300 * time.Millisecond)
	interval := time.Second / time.Duration(rate)
	b.ResetTimer()
	next := time.Now()
	dropped := 0
	for i := 0; i < b.N; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		if err := pubE.Publish("lat", strconv.AppendInt(nil, time.Now().UnixNano(), 10)); err != nil {
			dropped++
		}
	}
	lc.want -= int64(dropped)
	select {
	case <-lc.done:
	case <-time.After(10 * time.Second):
	}
	b.StopTimer()
	lat := slices.Clone(lc.lat)
	slices.Sort(lat)
	if len(lat) == 0 {
		b.Fatal("no message arrived")
	}
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50_µs")
	b.ReportMetric(q(0.99), "p99_µs")
	b.ReportMetric(float64(b.N-len(lat)-dropped), "lost")
	b.ReportMetric(float64(dropped), "dropped")
}

// BenchmarkLatency compares the publish → WebSocket client latency of a single
// node with that of two instances linked by Redis, at the same message rate
// (10,000 msg/s, one subscriber). Run with -benchtime=20000x.
func BenchmarkLatency(b *testing.B) {
	const rate = 10000
	b.Run("single", func(b *testing.B) {
		e, err := engine.New(engine.Config{InboundRate: -1, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer e.Shutdown(context.Background())
		benchLatency(b, e, e, rate)
	})
	b.Run("redis", func(b *testing.B) {
		r := redistest.Start(b)
		var es []*engine.Engine
		for _, id := range []string{"a", "b"} {
			br, err := New(Config{URL: r.URL(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			e, err := engine.New(engine.Config{Broker: br, InstanceID: id, InboundRate: -1, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Shutdown(context.Background())
			es = append(es, e)
		}
		benchLatency(b, es[0], es[1], rate)
	})
}
