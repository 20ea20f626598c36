package loadtest

import (
	"sync"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 10 minutes with three
// significant digits: enough for loopback microseconds and stalled minutes.
const (
	histMin    = 1
	histMax    = int64(10 * 60 * 1e6)
	histDigits = 3
)

func NewHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// recordClamped records v, clamped into the histogram's range.
func recordClamped(h *hdrhistogram.Histogram, v int64) {
	if v < 0 {
		v = 0
	}
	if v > histMax {
		v = histMax
	}
	_ = h.RecordValue(v)
}

// sparseHist is a histogram in transit between processes: the non-zero counts
// of a histogram of the standard geometry, as [index, count] pairs. Merging the
// decoded histograms is exact.
type sparseHist struct {
	Bins [][2]int64 `json:"bins"`
}

// exportSparse encodes h; nil for an empty histogram.
func exportSparse(h *hdrhistogram.Histogram) *sparseHist {
	if h.TotalCount() == 0 {
		return nil
	}
	s := &sparseHist{}
	for i, c := range h.Export().Counts {
		if c != 0 {
			s.Bins = append(s.Bins, [2]int64{int64(i), c})
		}
	}
	return s
}

// countsLen is the length of the counts array of the standard geometry.
var countsLen = sync.OnceValue(func() int { return len(NewHistogram().Export().Counts) })

// mergeInto adds s to h (which must have the standard geometry).
func (s *sparseHist) mergeInto(h *hdrhistogram.Histogram) {
	if s == nil || len(s.Bins) == 0 {
		return
	}
	counts := make([]int64, countsLen())
	for _, b := range s.Bins {
		if b[0] >= 0 && int(b[0]) < len(counts) {
			counts[b[0]] += b[1]
		}
	}
	h.Merge(hdrhistogram.Import(&hdrhistogram.Snapshot{
		LowestTrackableValue:  histMin,
		HighestTrackableValue: histMax,
		SignificantFigures:    histDigits,
		Counts:                counts,
	}))
}

// lockedHist is a histogram recorded into by many goroutines and drained by
// one sampler.
type lockedHist struct {
	mu sync.Mutex // guards h.
	h  *hdrhistogram.Histogram
}

func (l *lockedHist) record(v int64) {
	l.mu.Lock()
	recordClamped(l.h, v)
	l.mu.Unlock()
}

// drainInto moves every count into dst and resets.
func (l *lockedHist) drainInto(dst *hdrhistogram.Histogram) {
	l.mu.Lock()
	if l.h.TotalCount() > 0 {
		dst.Merge(l.h)
		l.h.Reset()
	}
	l.mu.Unlock()
}
