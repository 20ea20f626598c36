package report

import (
	"math"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency summarises one latency distribution. Values are in Unit ("us" for
// the load generator, whatever the producer recorded otherwise).
type Latency struct {
	Unit   string  `json:"unit"`
	Count  int64   `json:"count"`
	Min    float64 `json:"min"`
	Mean   float64 `json:"mean"`
	StdDev float64 `json:"stddev"`
	Max    float64 `json:"max"`
	// Percentiles is the percentile spectrum, ascending by P (0–100), dense
	// enough to draw: every 10 up to 90, then 95, 97.5, 99, 99.5, 99.9 … 100,
	// as far as the samples tell (see LatencyFromHistogram).
	Percentiles []Percentile `json:"percentiles"`
	// Buckets is the distribution in 1-2-5 buckets: Count values were above the
	// previous bucket's Le and at most this Le. Empty buckets are left out.
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Percentile is the value at percentile P: P% of the samples were at most Value.
type Percentile struct {
	P     float64 `json:"p"`
	Value float64 `json:"value"`
}

// Bucket is one bar of a latency histogram.
type Bucket struct {
	Le    float64 `json:"le"`
	Count int64   `json:"count"`
}

// SpectrumPercentiles are the percentiles LatencyFromHistogram reports.
var SpectrumPercentiles = []float64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100}

// LatencyFromHistogram summarises h, whose values are in unit. It returns nil
// for an empty histogram. Percentiles that the samples cannot tell apart from
// the maximum are left out (at least one sample must lie above a listed
// percentile: 50 samples go up to the 98th), so that a chart of a few samples
// does not draw a tail it never measured; the maximum is always listed as 100.
func LatencyFromHistogram(h *hdrhistogram.Histogram, unit string) *Latency {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	l := &Latency{
		Unit:   unit,
		Count:  h.TotalCount(),
		Min:    float64(h.Min()),
		Mean:   round3(h.Mean()),
		StdDev: round3(h.StdDev()),
		Max:    float64(h.Max()),
	}
	for _, p := range SpectrumPercentiles {
		if p < 100 && float64(l.Count)*(1-p/100) < 1 {
			continue
		}
		v := float64(h.ValueAtQuantile(p))
		if p == 0 {
			v = l.Min
		}
		if p == 100 {
			v = l.Max
		}
		l.Percentiles = append(l.Percentiles, Percentile{P: p, Value: v})
	}
	bi := 0
	for _, bar := range h.Distribution() {
		if bar.Count == 0 {
			continue
		}
		for float64(bar.To) > bucketBound(bi) {
			bi++
		}
		le := bucketBound(bi)
		if n := len(l.Buckets); n > 0 && l.Buckets[n-1].Le == le {
			l.Buckets[n-1].Count += bar.Count
		} else {
			l.Buckets = append(l.Buckets, Bucket{Le: le, Count: bar.Count})
		}
	}
	return l
}

// At returns the value at percentile p, interpolating nothing: the smallest
// listed percentile at or above p. ok is false when there is none.
func (l *Latency) At(p float64) (float64, bool) {
	if l == nil {
		return 0, false
	}
	for _, q := range l.Percentiles {
		if q.P >= p {
			return q.Value, true
		}
	}
	return 0, false
}

// latencyUnits are the time units a latency may be recorded in, with their
// length in seconds.
var latencyUnits = map[string]float64{"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1}

// displayUnit picks one unit to show every value of ls in, by the largest
// median: µs below 1 ms, ms below 1 s, else s. scale[i] converts a value of
// ls[i]'s own unit into it. ok is false when a unit is not a time unit; the
// values are then shown as recorded, in that unit.
func displayUnit(ls ...*Latency) (unit string, scale []float64, ok bool) {
	var p50 float64 // seconds
	for _, l := range ls {
		if l == nil {
			continue
		}
		f, known := latencyUnits[l.Unit]
		if !known {
			return l.Unit, nil, false
		}
		if v, have := l.At(50); have {
			p50 = max(p50, v*f)
		}
	}
	unit, f := "µs", 1e-6
	switch {
	case p50 >= 1:
		unit, f = "s", 1
	case p50 >= 1e-3:
		unit, f = "ms", 1e-3
	}
	for _, l := range ls {
		s := 1.0
		if l != nil {
			s = latencyUnits[l.Unit] / f
		}
		scale = append(scale, s)
	}
	return unit, scale, true
}

// bucketBound returns the i-th bucket bound: 1, 2, 5, 10, 20, 50, …
func bucketBound(i int) float64 {
	return []float64{1, 2, 5}[i%3] * math.Pow10(i/3)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
