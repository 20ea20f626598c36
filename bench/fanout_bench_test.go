package bench

import (
	"strconv"
	"testing"

	"github.com/shardhub/shardhub/engine"
)

var payload64 = []byte(`{"type":"tick","seq":123456,"ts":1763900000000000000,"p":"xx"}`)

func newFleet(b *testing.B, conns, shards int) *Fleet {
	b.Helper()
	f, err := NewFleet(engine.Config{Shards: shards, Logger: quiet()}, conns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = f.Close() })
	return f
}

// benchBroadcast measures one broadcast reaching every one of conns virtual
// connections: ns/op is the completion time of one broadcast.
func benchBroadcast(b *testing.B, conns, shards int) {
	f := newFleet(b, conns, shards)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.Broadcast(payload64); err != nil {
			b.Fatal(err)
		}
	}
	reportDeliveries(b, int64(conns))
}

func reportDeliveries(b *testing.B, perOp int64) {
	total := float64(perOp) * float64(b.N)
	sec := b.Elapsed().Seconds()
	b.ReportMetric(total/sec, "deliveries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/delivery")
}

func BenchmarkBroadcast_1K(b *testing.B)   { benchBroadcast(b, 1_000, 0) }
func BenchmarkBroadcast_10K(b *testing.B)  { benchBroadcast(b, 10_000, 0) }
func BenchmarkBroadcast_100K(b *testing.B) { benchBroadcast(b, 100_000, 0) }
func BenchmarkBroadcast_1M(b *testing.B) {
	if testing.Short() {
		b.Skip("1M connections: skipped in -short")
	}
	benchBroadcast(b, 1_000_000, 0)
}

// Scaling with the number of shards, 100K connections.
func BenchmarkBroadcastShards_1(b *testing.B)  { benchBroadcast(b, 100_000, 1) }
func BenchmarkBroadcastShards_2(b *testing.B)  { benchBroadcast(b, 100_000, 2) }
func BenchmarkBroadcastShards_4(b *testing.B)  { benchBroadcast(b, 100_000, 4) }
func BenchmarkBroadcastShards_8(b *testing.B)  { benchBroadcast(b, 100_000, 8) }
func BenchmarkBroadcastShards_64(b *testing.B) { benchBroadcast(b, 100_000, 64) }

// benchBurst measures a burst of broadcasts (the batched path), 10K connections.
func benchBurst(b *testing.B, burst int) {
	const conns = 10_000
	f := newFleet(b, conns, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.BroadcastBurst(payload64, burst); err != nil {
			b.Fatal(err)
		}
	}
	reportDeliveries(b, int64(conns*burst))
}

func BenchmarkBroadcastBurst_10x10K(b *testing.B)  { benchBurst(b, 10) }
func BenchmarkBroadcastBurst_100x10K(b *testing.B) { benchBurst(b, 100) }

// benchPublish measures a publication reaching subs subscribers among 100K
// connections (or subs connections when more).
func benchPublish(b *testing.B, subs int) {
	f := newFleet(b, max(subs, 10_000), 0)
	per, err := f.Subscribe("bench", subs)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.Publish("bench", payload64, per); err != nil {
			b.Fatal(err)
		}
	}
	reportDeliveries(b, int64(subs))
}

func BenchmarkPublish_1Sub(b *testing.B)     { benchPublish(b, 1) }
func BenchmarkPublish_1KSubs(b *testing.B)   { benchPublish(b, 1_000) }
func BenchmarkPublish_100KSubs(b *testing.B) { benchPublish(b, 100_000) }

// BenchmarkPrivateSend measures Engine.Send to one of 10K connections.
func BenchmarkPrivateSend(b *testing.B) {
	f := newFleet(b, 10_000, 0)
	ids := make([]string, len(f.Conns))
	for i, c := range f.Conns {
		ids[i] = c.ID()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := f.Engine.Send(ids[i%len(ids)], payload64); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportDeliveries(b, 1)
}

// BenchmarkRegisterUnregister measures attaching and closing a connection.
func BenchmarkRegisterUnregister(b *testing.B) {
	f := newFleet(b, 0, 0)
	sink := newCountingSink()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c, err := f.Engine.Attach("r"+strconv.Itoa(i), sink)
		if err != nil {
			b.Fatal(err)
		}
		c.Close(engine.CloseNormal, "")
		i++
	}
}
