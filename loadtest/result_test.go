package loadtest

import (
	"testing"
	"time"
)

// TestPeakIgnoresShortIntervals: the short last interval of a phase divides a
// few late deliveries by a tiny duration; it must not become the reported peak.
func TestPeakIgnoresShortIntervals(t *testing.T) {
	s := series{minPeakDT: 0.5}
	s.add(1.0, Progress{DeliveriesPerSec: 1000}, 0)
	s.add(2.0, Progress{DeliveriesPerSec: 3000}, 0)
	s.add(2.05, Progress{DeliveriesPerSec: 900000}, 0) // 50 ms interval
	if s.peakDPS != 3000 {
		t.Fatalf("peak = %v, want 3000", s.peakDPS)
	}
	if len(s.dps) != 3 || s.dps[2] != 900000 {
		t.Fatalf("the time series must keep every point: %v", s.dps)
	}
}

// TestLastPartialIntervalLeftOut: the last sample of a run covers a fraction
// of an interval while the run winds down; it reaches the progress line but not
// the time series, which would otherwise end in a drop that never happened.
func TestLastPartialIntervalLeftOut(t *testing.T) {
	t.Parallel()
	o := &orchestrator{cfg: Config{Interval: time.Second}, start: time.Now().Add(-3 * time.Second),
		fleet: &Fleet{}, res: &Result{}, lat: NewHistogram(), connH: NewHistogram(), tickLat: NewHistogram()}
	var progress []Progress
	o.cfg.OnProgress = func(p Progress) { progress = append(progress, p) }
	o.lastT = time.Now().Add(-time.Second)
	o.tick(false) // a full interval
	o.lastT = time.Now().Add(-time.Second)
	o.tick(true) // a last interval that happens to be full
	o.lastT = time.Now().Add(-100 * time.Millisecond)
	o.tick(true) // the usual partial last interval
	if len(progress) != 3 {
		t.Fatalf("%d progress reports, want 3", len(progress))
	}
	if n := len(o.res.series.t); n != 2 {
		t.Fatalf("%d time-series points, want 2 (the partial last interval left out)", n)
	}
}
