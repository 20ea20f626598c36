package loadtest

import (
	"testing"
	"time"
)

// The fleet benchmarks compare the I/O models on what a load generator pays:
// memory per held connection and CPU per received frame. Client and server
// share this process (the server's side is the same for both models), so
// the figures compare the models; `shardhub loadtest --scenario idle`
// measures the load generator alone (docs/benchmarks.md, "Load generator").
//
//	go test -run '^$' -bench Fleet -benchtime 2x ./loadtest     (idle memory)
//	go test -run '^$' -bench FleetRead ./loadtest             (frames)

// openFleet opens n connections to url with the given I/O model and waits
// until all are open.
func openFleet(b *testing.B, url, io string, n int) *Fleet {
	b.Helper()
	f, err := NewFleet(Config{IO: io, Scenario: Idle, URLs: []string{url}, Conns: n, RampRate: -1, Logger: quietLogger()}, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for c := f.Counts(); !c.DialsDone || c.Open+c.Failed < int64(n); c = f.Counts() {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d connections open after a minute", c.Open, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c := f.Counts(); c.Open != int64(n) {
		b.Fatalf("%d of %d connections open: %v", c.Open, n, c.Errors)
	}
	return f
}

func BenchmarkFleetIdleConn(b *testing.B) {
	for _, io := range ioModes() {
		b.Run(io, func(b *testing.B) {
			const n = 2000
			url := frameServer(b, false)
			for range b.N {
				before := liveBytes()
				f := openFleet(b, url, io, n)
				time.Sleep(100 * time.Millisecond) // every reader settles
				after := liveBytes()
				b.ReportMetric(float64(after-before)/n, "B/conn")
				_, _ = f.Stop(NewHistogram(), NewHistogram())
			}
		})
	}
}

func BenchmarkFleetRead(b *testing.B) {
	for _, io := range ioModes() {
		b.Run(io, func(b *testing.B) {
			f := openFleet(b, frameServer(b, true), io, 16)
			defer func() { _, _ = f.Stop(NewHistogram(), NewHistogram()) }()
			b.ResetTimer()
			target := f.Counts().Received + int64(b.N)
			for f.Counts().Received < target {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			if c := f.Counts(); c.Dropped != 0 {
				b.Fatalf("%d connections dropped: %v", c.Dropped, c.Errors)
			}
		})
	}
}
