package loadtest

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/loadtest/report"
)

// metric returns a report metric, failing the test when it is missing.
func metric(tb testing.TB, r *report.Report, name string) float64 {
	tb.Helper()
	m, ok := r.Metric(name)
	if !ok {
		tb.Fatalf("report has no metric %q", name)
	}
	return m.Value
}

func TestBroadcastExactCounts(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		url, _ := startEngine(t, engine.Config{})
		const conns = 40
		res := run(t, Config{IO: io,
			URLs: []string{url}, Conns: conns, Rate: 20, Duration: time.Second,
			ReadyMatch: `"type":"welcome"`,
		})
		c := res.Counts
		if res.Published != 20 || res.PublishFailed != 0 {
			t.Fatalf("published %d (failed %d), want 20", res.Published, res.PublishFailed)
		}
		if c.Connected != conns || res.Counted != conns {
			t.Fatalf("connected %d counted %d, want %d", c.Connected, res.Counted, conns)
		}
		if res.Expected != 20*conns || c.Unique != res.Expected || c.Received != res.Expected {
			t.Errorf("expected %d unique %d received %d, want %d each", res.Expected, c.Unique, c.Received, 20*conns)
		}
		if c.Duplicates != 0 || c.OutOfOrder != 0 || res.Loss() != 0 {
			t.Errorf("dups %d ooo %d loss %d", c.Duplicates, c.OutOfOrder, res.Loss())
		}
		if n := res.Latency.TotalCount(); n != c.Unique {
			t.Errorf("latency samples %d, deliveries %d", n, c.Unique)
		}
		if n := res.Connect.TotalCount(); n != conns {
			t.Errorf("handshake samples %d", n)
		}
		rep := res.Report("")
		if metric(t, rep, "loss_pct") != 0 || metric(t, rep, "deliveries") != 20*conns {
			t.Error("report disagrees with the result")
		}
		// The server's ledger saw the same: every broadcast written to every
		// connection (welcomes are not publications and are not counted there).
		if sent := metric(t, rep, "server_messages_sent"); sent != 20*conns {
			t.Errorf("server_messages_sent = %v, want %d", sent, 20*conns)
		}
		if metric(t, rep, "server_dropped_broadcasts") != 0 || metric(t, rep, "server_forced_disconnects") != 0 {
			t.Error("server dropped or evicted")
		}
		if metric(t, rep, "loadgen_cpu_ns_per_delivery") <= 0 {
			t.Error("no load-generator CPU per delivery")
		}
		if s, ok := rep.Series("deliveries_per_sec"); !ok || len(s.T) == 0 {
			t.Error("no deliveries/s time series")
		}
		if last := time.Unix(0, c.LastDelivery); last.Before(res.Started) || last.After(res.Started.Add(res.Elapsed)) {
			t.Errorf("last delivery at %v, outside the run %v + %v", last, res.Started, res.Elapsed)
		}
		// The measured phase and the drain are marked, in order, inside the run.
		if len(rep.Phases) != 2 || rep.Phases[0].Name != PhaseMeasure || rep.Phases[1].Name != PhaseDrain ||
			rep.Phases[0].Start <= 0 || rep.Phases[0].End <= rep.Phases[0].Start || rep.Phases[1].Start < rep.Phases[0].End ||
			rep.Phases[1].End > rep.DurationSeconds {
			t.Errorf("phases %+v in a run of %vs", rep.Phases, rep.DurationSeconds)
		}
		if f := res.Check(Limits{}); len(f) != 0 {
			t.Errorf("an exact run fails its checks: %+v", f)
		}
		if rep.Workload["rate"] != "20" || rep.Workload["duration"] != "1s" || rep.Workload["conns"] != "40" {
			t.Errorf("workload %v", rep.Workload)
		}
	})
}

// TestPublishFailuresAreErrors: a server answering every publish with 404
// fails the publishes check, and the progress line counts them as errors.
func TestPublishFailuresAreErrors(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		srv := newFakeServer(t, func(f *fakeServer) { f.apiStatus = http.StatusNotFound })
		var mu sync.Mutex
		var last Progress
		res := run(t, Config{IO: io, URLs: []string{srv.URL}, Conns: 5, Rate: 20, Duration: 500 * time.Millisecond,
			OnProgress: func(p Progress) { mu.Lock(); last = p; mu.Unlock() }})
		if res.Published == 0 || res.PublishFailed != res.Published || res.Errors["publish_http_404"] != res.Published {
			t.Fatalf("published %d, failed %d, errors %v", res.Published, res.PublishFailed, res.Errors)
		}
		mu.Lock()
		p := last
		mu.Unlock()
		if p.Phase != PhaseDone || p.PublishFailed != res.PublishFailed || p.Errors < p.PublishFailed {
			t.Errorf("last progress %+v: publish failures not counted as errors", p)
		}
		fails := res.Check(DefaultLimits)
		if len(fails) != 1 || fails[0].Check != CheckPublishes || !strings.Contains(fails[0].Detail, "http_404") {
			t.Fatalf("checks %+v, want the publishes check failing on http_404", fails)
		}
		if o := res.Outcome(DefaultLimits); o.Pass || !strings.HasPrefix(o.Summary, "FAIL") || len(o.Failures) != 1 {
			t.Errorf("outcome %+v", o)
		}
		if f := res.Check(Limits{ConnFailuresPct: 1, PublishFailuresPct: 100}); len(f) != 0 {
			t.Errorf("a 100%% publish-failure limit still fails: %+v", f)
		}
	})
}

func TestChannelsPerChannelCounts(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		url, _ := startEngine(t, engine.Config{})
		for _, zipf := range []bool{false, true} {
			res := run(t, Config{IO: io,
				Scenario: Channels, URLs: []string{url}, Conns: 30, Rate: 16, Duration: time.Second,
				Channels: 8, SubsPerConn: 3, Zipf: zipf,
			})
			c := res.Counts
			if res.Counted != 30 || res.Subscriptions != 90 {
				t.Fatalf("zipf=%v: counted %d subscriptions %d", zipf, res.Counted, res.Subscriptions)
			}
			if res.Expected == 0 || c.Unique != res.Expected || c.Duplicates != 0 || c.OutOfOrder != 0 {
				t.Errorf("zipf=%v: expected %d unique %d dups %d ooo %d", zipf, res.Expected, c.Unique, c.Duplicates, c.OutOfOrder)
			}
			// 16 publications round-robin over 8 channels: 2 each, times 90 subscriptions.
			if res.Published != 16 || res.PublishBehind != 0 || res.Expected != 2*90 {
				t.Errorf("zipf=%v: published %d (behind %d) expected %d, want 16, 0, %d", zipf, res.Published, res.PublishBehind, res.Expected, 2*90)
			}
		}
	})
}

func TestChannelsZipfSkews(t *testing.T) {
	t.Parallel()
	cfg := Config{Scenario: Channels, Channels: 50, SubsPerConn: 1, Zipf: true}.withDefaults()
	hits := map[uint32]int{}
	for g := range 2000 {
		hits[pickChannels(cfg, g)[0]]++
	}
	if hits[0] < 4*hits[10] {
		t.Errorf("zipf not skewed: channel 0 %d, channel 10 %d", hits[0], hits[10])
	}
	again := Config{Scenario: Channels, Channels: 50, SubsPerConn: 5}.withDefaults()
	a, b := pickChannels(again, 7), pickChannels(again, 7)
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("channel choice not reproducible")
		}
	}
}

func TestDroppedMessagesAreLoss(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		srv := newFakeServer(t, func(f *fakeServer) {
			f.mangle = func(n int, body []byte) [][]byte {
				if n%10 == 9 {
					return nil // every 10th message vanishes
				}
				return [][]byte{body}
			}
		})
		res := run(t, Config{IO: io, URLs: []string{srv.URL}, Conns: 10, Rate: 40, Duration: 500 * time.Millisecond, Drain: 500 * time.Millisecond})
		rep := res.Report("")
		if res.Published != 20 {
			t.Fatalf("published %d", res.Published)
		}
		if got := metric(t, rep, "loss_pct"); got != 10 {
			t.Errorf("loss_pct = %v, want 10", got)
		}
		if res.Loss() != 2*10 || res.Counts.OutOfOrder != 0 || res.Counts.Duplicates != 0 {
			t.Errorf("loss %d ooo %d dups %d", res.Loss(), res.Counts.OutOfOrder, res.Counts.Duplicates)
		}
	})
}

func TestOutOfOrderAndDuplicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		mangle      func() func(n int, body []byte) [][]byte // a new one per server: it may keep state
		ooo, dup    int64                                    // per connection, for 20 messages
		lossPerConn int64
	}{
		{"swapped pairs", func() func(int, []byte) [][]byte {
			var held []byte
			return func(n int, body []byte) [][]byte {
				if n%2 == 0 {
					held = body
					return nil
				}
				return [][]byte{body, held}
			}
		}, 10, 0, 0},
		{"every 5th twice", func() func(int, []byte) [][]byte {
			return func(n int, body []byte) [][]byte {
				if n%5 == 4 {
					return [][]byte{body, body}
				}
				return [][]byte{body}
			}
		}, 0, 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			eachIO(t, func(t *testing.T, io string) {
				srv := newFakeServer(t, func(f *fakeServer) { f.mangle = tt.mangle() })
				const conns = 8
				res := run(t, Config{IO: io, URLs: []string{srv.URL}, Conns: conns, Rate: 40, Duration: 500 * time.Millisecond})
				c := res.Counts
				if res.Published != 20 {
					t.Fatalf("published %d", res.Published)
				}
				if c.OutOfOrder != tt.ooo*conns || c.Duplicates != tt.dup*conns || res.Loss() != tt.lossPerConn*conns {
					t.Errorf("ooo %d dups %d loss %d; want %d %d %d", c.OutOfOrder, c.Duplicates, res.Loss(),
						tt.ooo*conns, tt.dup*conns, tt.lossPerConn*conns)
				}
				if c.Unique != res.Expected {
					t.Errorf("unique %d expected %d", c.Unique, res.Expected)
				}
			})
		})
	}
}

func TestStallingServer(t *testing.T) {
	t.Parallel()
	t.Run("publish API hangs", func(t *testing.T) {
		t.Parallel()
		srv := newFakeServer(t, func(f *fakeServer) { f.apiBlock = true })
		start := time.Now()
		res := run(t, Config{URLs: []string{srv.URL}, Conns: 5, Rate: 20, Duration: time.Second,
			HTTPTimeout: 200 * time.Millisecond, Drain: 200 * time.Millisecond})
		if took := time.Since(start); took > 8*time.Second {
			t.Errorf("run took %s", took)
		}
		if res.PublishFailed == 0 || res.Errors["publish_timeout"] == 0 {
			t.Errorf("publish failures %d, errors %v", res.PublishFailed, res.Errors)
		}
		if res.PublishBehind == 0 {
			t.Error("a publisher stuck on timeouts did not fall behind")
		}
		if res.Expected != 0 || res.Counts.Unique != 0 {
			t.Errorf("expected %d unique %d", res.Expected, res.Counts.Unique)
		}
	})
	t.Run("delivery lags", func(t *testing.T) {
		t.Parallel()
		eachIO(t, func(t *testing.T, io string) {
			srv := newFakeServer(t, func(f *fakeServer) { f.deliverLag = 400 * time.Millisecond })
			res := run(t, Config{IO: io, URLs: []string{srv.URL}, Conns: 5, Rate: 20, Duration: 500 * time.Millisecond})
			if res.Loss() != 0 {
				t.Errorf("loss %d", res.Loss())
			}
			if p50 := res.Latency.ValueAtQuantile(50); p50 < 400_000 {
				t.Errorf("p50 = %dµs, want ≥ 400ms", p50)
			}
		})
	})
	t.Run("delivery lags past the drain", func(t *testing.T) {
		t.Parallel()
		eachIO(t, func(t *testing.T, io string) {
			srv := newFakeServer(t, func(f *fakeServer) { f.deliverLag = 3 * time.Second })
			start := time.Now()
			res := run(t, Config{IO: io, URLs: []string{srv.URL}, Conns: 5, Rate: 20, Duration: 300 * time.Millisecond, Drain: 300 * time.Millisecond})
			if took := time.Since(start); took > 6*time.Second {
				t.Errorf("run took %s", took)
			}
			if res.Expected == 0 || res.Loss() != res.Expected {
				t.Errorf("expected %d loss %d: undelivered messages must count as loss", res.Expected, res.Loss())
			}
		})
	})
	t.Run("handshake hangs", func(t *testing.T) {
		t.Parallel()
		ln := newSilentListener(t)
		start := time.Now()
		res := run(t, Config{URLs: []string{"ws://" + ln + "/ws"}, Conns: 5, ConnectTimeout: 300 * time.Millisecond,
			Duration: 200 * time.Millisecond, MetricsPath: "-", StatsPath: "-", HTTPTimeout: 300 * time.Millisecond})
		if took := time.Since(start); took > 8*time.Second {
			t.Errorf("run took %s", took)
		}
		if res.Counts.Failed != 5 || res.Errors["connect_timeout"] != 5 {
			t.Errorf("failed %d errors %v", res.Counts.Failed, res.Errors)
		}
	})
}

func TestInterrupt(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		url, _ := startEngine(t, engine.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cfg := Config{IO: io, URLs: []string{url}, Conns: 10, Rate: 50, Duration: time.Minute, Logger: quietLogger(),
			Interval: 100 * time.Millisecond, Settle: -1}
		cfg.OnProgress = func(p Progress) {
			if p.Phase == PhaseMeasure && p.Deliveries > 0 {
				cancel()
			}
		}
		start := time.Now()
		res, err := Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("interrupted run took %s", time.Since(start))
		}
		if !res.Interrupted || res.Counts.Unique == 0 || res.Counts.Open != 0 {
			t.Errorf("interrupted %v unique %d open %d", res.Interrupted, res.Counts.Unique, res.Counts.Open)
		}
		rep := res.Report("")
		found := false
		for _, n := range rep.Notes {
			found = found || len(n) > 11 && n[:11] == "interrupted"
		}
		if !found {
			t.Errorf("no interruption note in %v", rep.Notes)
		}
	})
}

func TestConnectAndIdleScenarios(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		url, _ := startEngine(t, engine.Config{})
		res := run(t, Config{IO: io, Scenario: Connect, URLs: []string{url}, Conns: 50, Duration: -1, RampRate: -1})
		rep := res.Report("")
		if metric(t, rep, "conns_connected") != 50 || metric(t, rep, "connect_rate") <= 0 || metric(t, rep, "connect_time_p99_ms") <= 0 {
			t.Errorf("connect metrics: %+v", rep.Metrics)
		}
		res = run(t, Config{IO: io, Scenario: Idle, URLs: []string{url}, Conns: 200, Duration: 500 * time.Millisecond})
		rep = res.Report("")
		if len(rep.Server) != 1 || len(rep.Server[0].Memory) == 0 {
			t.Fatalf("no memory samples: %+v", rep.Server)
		}
		if last := rep.Server[0].Memory[len(rep.Server[0].Memory)-1]; last.Conns != 200 || last.Goroutines == 0 {
			t.Errorf("last memory sample %+v", last)
		}
		// Zero growth is a result (no goroutine per idle connection): the metrics
		// are there whenever the server reports its Go memory.
		for _, name := range []string{"server_go_bytes_per_conn", "server_heap_bytes_per_conn", "server_stack_bytes_per_conn"} {
			metric(t, rep, name)
		}
		// Present; not judged: the server runs in this test process, whose
		// other tests start and end goroutines meanwhile (an idle connection
		// has none of its own with the reactor, so the growth is all noise).
		metric(t, rep, "server_goroutines_per_conn")
		// The load generator's own cost per connection. This test process
		// runs other tests beside it, so the values are not judged here
		// (docs/benchmarks.md has them, measured alone).
		for _, name := range []string{"loadgen_go_bytes_per_conn", "loadgen_heap_bytes_per_conn", "loadgen_stack_bytes_per_conn", "loadgen_rss_bytes_per_conn"} {
			metric(t, rep, name)
		}
		if rep.Workload["io"] != io {
			t.Errorf("workload io = %q, want %q", rep.Workload["io"], io)
		}
	})
}

func TestSeveralTargetsAndSourceIPs(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		u1, e1 := startEngine(t, engine.Config{})
		u2, e2 := startEngine(t, engine.Config{})
		ips, _ := ParseSourceIPs("127.0.0.2-127.0.0.4")
		res := run(t, Config{IO: io, URLs: []string{u1, u2}, Conns: 30, Rate: 10, Duration: time.Second,
			SourceIPs: ips, ReadyMatch: `"type":"welcome"`})
		if e1.Connections() != 0 && res.Counts.Open != 0 {
			t.Error("connections left open")
		}
		// Each instance got its own 10 broadcasts for its own 15 connections.
		if res.Published != 20 || res.Expected != 2*10*15 || res.Counts.Unique != res.Expected {
			t.Errorf("published %d expected %d unique %d", res.Published, res.Expected, res.Counts.Unique)
		}
		s1, s2 := e1.Stats(), e2.Stats()
		_ = s1
		_ = s2
	})
}

// TestServerPIDCountsCPU: with ServerPIDs the server CPU comes from /proc for
// exactly those processes (here the test process, which runs the engine).
func TestServerPIDCountsCPU(t *testing.T) {
	t.Parallel()
	eachIO(t, func(t *testing.T, io string) {
		url, _ := startEngine(t, engine.Config{})
		res := run(t, Config{IO: io, URLs: []string{url}, Conns: 50, Rate: 50, Duration: 500 * time.Millisecond, ServerPIDs: []int{os.Getpid()}})
		rep := res.Report("")
		if cpu := metric(t, rep, "server_cpu_seconds"); cpu <= 0 {
			t.Fatalf("server_cpu_seconds = %v", cpu)
		}
		if cpu, ok := procCPU(os.Getpid()); !ok || cpu <= 0 {
			t.Fatalf("procCPU(self) = %v, %v", cpu, ok)
		}
		if _, ok := procCPU(-1); ok {
			t.Fatal("procCPU of a missing process succeeded")
		}
	})
}

// TestServerPIDRSSCountedOnce: with --server-pid the servers' RSS comes from
// those processes alone, not again from the API bases naming the same ones.
func TestServerPIDRSSCountedOnce(t *testing.T) {
	t.Parallel()
	url, _ := startEngine(t, engine.Config{})
	res := run(t, Config{Scenario: Idle, URLs: []string{url}, Conns: 20, Duration: 300 * time.Millisecond, ServerPIDs: []int{os.Getpid()}})
	var want float64
	for i, s := range res.Servers {
		if res.serverPID[i] && len(s.Memory) > 0 {
			want += float64(s.Memory[len(s.Memory)-1].RSS) - float64(res.baseMem[i].RSS)
		}
	}
	want = round(want/float64(res.Counted), 1)
	got, ok := res.Report("").Metric("server_rss_bytes_per_conn")
	if ok != (want != 0) || ok && got.Value != want { // no growth, no metric
		t.Errorf("server_rss_bytes_per_conn = %v (present %v), want %v (the --server-pid process only)", got.Value, ok, want)
	}
}
