package loadtest

import "testing"

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
