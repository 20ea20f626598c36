package report

import (
	"bytes"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"
)

func metricReport(name string, ms ...Metric) *Report {
	r := &Report{Schema: Schema, Kind: KindLoadtest, Name: name}
	r.Metrics = ms
	return r
}

func TestCompareVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		better    Better
		base, new float64
		threshold float64
		want      Verdict
	}{
		{"throughput up", HigherIsBetter, 100, 120, 5, Improved},
		{"throughput down beyond threshold", HigherIsBetter, 100, 90, 5, Regression},
		{"throughput down within threshold", HigherIsBetter, 100, 96, 5, Worse},
		{"throughput down exactly at threshold", HigherIsBetter, 100, 95, 5, Worse},
		{"latency down", LowerIsBetter, 100, 80, 5, Improved},
		{"latency up beyond threshold", LowerIsBetter, 100, 110, 5, Regression},
		{"latency up within threshold", LowerIsBetter, 100, 103, 5, Worse},
		{"no threshold: any worsening regresses", LowerIsBetter, 100, 100.5, 0, Regression},
		{"unchanged", LowerIsBetter, 100, 100, 0, Same},
		{"loss from zero", LowerIsBetter, 0, 3, 50, Regression},
		{"loss to zero", LowerIsBetter, 3, 0, 5, Improved},
		{"negative baseline", HigherIsBetter, -10, -5, 5, Improved},
		{"informational", Informational, 1, 100, 5, Changed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := metricReport("a", Metric{Name: "m", Value: tt.base, Better: tt.better})
			b := metricReport("b", Metric{Name: "m", Value: tt.new, Better: tt.better})
			c := Compare([]*Report{a, b}, nil, CompareOptions{Threshold: tt.threshold})
			if got := c.Rows[0].Cells[1].Verdict; got != tt.want {
				t.Errorf("verdict = %s, want %s (Δ%% %v)", got, tt.want, c.Rows[0].Cells[1].DeltaPct)
			}
			if n := len(c.Regressions()); (n > 0) != (tt.want == Regression) {
				t.Errorf("Regressions() = %v", c.Regressions())
			}
		})
	}
}

func TestCompareSeveralAndMissing(t *testing.T) {
	t.Parallel()
	a := metricReport("a", Metric{Name: "dps", Value: 1000, Unit: "msg/s", Better: HigherIsBetter}, Metric{Name: "only_a", Value: 1})
	b := metricReport("b", Metric{Name: "dps", Value: 1500, Unit: "msg/s", Better: HigherIsBetter}, Metric{Name: "only_b", Value: 2})
	c := metricReport("c", Metric{Name: "dps", Value: 500, Unit: "msg/s", Better: HigherIsBetter})
	cmp := Compare([]*Report{a, b, c}, []string{"base", "new", "newer"}, CompareOptions{Threshold: 5})
	if len(cmp.Rows) != 3 {
		t.Fatalf("rows = %+v", cmp.Rows)
	}
	dps := cmp.Rows[0]
	if dps.Cells[1].DeltaPct != 50 || dps.Cells[1].Verdict != Improved {
		t.Errorf("b: %+v", dps.Cells[1])
	}
	if dps.Cells[2].DeltaPct != -50 || dps.Cells[2].Verdict != Regression || dps.Cells[2].Delta != -500 {
		t.Errorf("c: %+v", dps.Cells[2])
	}
	if cmp.Rows[2].Cells[0].Verdict != Missing || cmp.Rows[2].Cells[1].Verdict != Missing {
		t.Errorf("only_b: %+v", cmp.Rows[2])
	}
	if regs := cmp.Regressions(); len(regs) != 1 || !strings.Contains(regs[0], "newer") {
		t.Errorf("regressions = %v", regs)
	}
	var buf bytes.Buffer
	if err := cmp.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dps", "+50.0%", "-50.0%", "REGRESSION", "better", "missing"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text table lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestCompareInclude(t *testing.T) {
	t.Parallel()
	a := metricReport("a", Metric{Name: "latency_p99_us", Value: 1, Better: LowerIsBetter}, Metric{Name: "cpu", Value: 1, Better: LowerIsBetter})
	b := metricReport("b", Metric{Name: "latency_p99_us", Value: 1, Better: LowerIsBetter}, Metric{Name: "cpu", Value: 9, Better: LowerIsBetter})
	c := Compare([]*Report{a, b}, nil, CompareOptions{Include: regexp.MustCompile(`^latency_`)})
	if len(c.Rows) != 1 || len(c.Regressions()) != 0 {
		t.Errorf("rows %+v regressions %v", c.Rows, c.Regressions())
	}
}

func TestCompareEnvWarnings(t *testing.T) {
	t.Parallel()
	a := metricReport("a")
	b := metricReport("b")
	a.Env = Env{Host: "x", Cores: 2, GOMAXPROCS: 2, GoVersion: "go1.26"}
	b.Env = Env{Host: "y", Cores: 8, GOMAXPROCS: 8, GoVersion: "go1.26"}
	b.Kind = KindBench
	c := Compare([]*Report{a, b}, nil, CompareOptions{})
	if len(c.Warnings) != 3 {
		t.Errorf("warnings = %v", c.Warnings)
	}
}

func TestPctString(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]string{math.Inf(1): "+inf%", math.Inf(-1): "-inf%", 0: "0%", 12.345: "+12.3%", -4: "-4.0%"} {
		if got := pctString(in); got != want {
			t.Errorf("pctString(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestCompareWorkloads: reports of different workloads are flagged, older
// reports (settings only in their config, durations in nanoseconds) compare
// with newer ones, and the verdict comes first.
func TestCompareWorkloads(t *testing.T) {
	t.Parallel()
	old := metricReport("old", Metric{Name: "deliveries_per_sec", Value: 100, Better: HigherIsBetter})
	old.Config = []byte(`{"scenario":"broadcast","conns":100,"rate":20,"duration":10000000000,"urls":["ws://x"]}`)
	same := metricReport("same", Metric{Name: "deliveries_per_sec", Value: 90, Better: HigherIsBetter})
	same.SetWorkload("scenario", "broadcast", "conns", 100, "rate", 20.0, "duration", 10*time.Second, "targets", 1)
	faster := metricReport("faster", Metric{Name: "deliveries_per_sec", Value: 200, Better: HigherIsBetter})
	faster.SetWorkload("scenario", "broadcast", "conns", 100, "rate", 40.0, "duration", 10*time.Second, "targets", 1)

	c := Compare([]*Report{old, same}, nil, CompareOptions{Threshold: 5})
	if !c.Comparable() {
		t.Errorf("an old report and a new one of the same workload differ: %v", c.WorkloadDiffs)
	}
	if v := c.Verdict(); !strings.HasPrefix(v, "REGRESSION: 1 worse than old beyond 5%: deliveries_per_sec -10.0%") {
		t.Errorf("verdict %q", v)
	}
	c = Compare([]*Report{same, faster}, nil, CompareOptions{})
	if c.Comparable() || len(c.WorkloadDiffs) != 1 || c.WorkloadDiffs[0] != "rate: same 20, faster 40" {
		t.Fatalf("workload diffs %v", c.WorkloadDiffs)
	}
	v := c.Verdict()
	if !strings.HasPrefix(v, "OK: nothing worse than same") || !strings.Contains(v, "NOT LIKE FOR LIKE") {
		t.Errorf("verdict %q", v)
	}
	var text bytes.Buffer
	if err := c.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(text.String(), "\n")
	if !strings.HasPrefix(lines[0], "verdict: OK") || !strings.Contains(lines[1], "workloads differ: rate: same 20, faster 40") {
		t.Errorf("text does not start with the verdict and the difference:\n%s", text.String())
	}
	var page bytes.Buffer
	if err := c.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	p := page.String()
	if i, j := strings.Index(p, `<p class="verdict fail">OK: nothing worse`), strings.Index(p, "<h2>"); i < 0 || i > j {
		t.Error("the HTML verdict is not first, or not marked as failing comparability")
	}
	if !strings.Contains(p, `<th class="n">same</th><th class="n">faster</th>`) {
		t.Error("the report columns' headers are not aligned with their numbers")
	}
}
