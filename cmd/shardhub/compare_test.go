package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompareExitCodes(t *testing.T) {
	t.Parallel()
	fx := func(name string) string { return filepath.Join("testdata", "compare", name) }
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string // substrings
		stderr   []string
		noStderr bool
	}{
		{"improvement passes the gate", []string{"--threshold", "5%", fx("base.json"), fx("faster.json")}, 0,
			[]string{"deliveries_per_sec", "+10.0%", "better", "-10.0%"}, nil, true},
		{"throughput drop and latency rise fail the gate", []string{"--threshold", "5%", fx("base.json"), fx("slower.json")}, 1,
			[]string{"-16.7%", "+30.0%", "REGRESSION"}, []string{"2 regression(s) beyond 5%", "deliveries_per_sec", "latency_p99_us"}, false},
		{"the gate judges direction, not sign: the reverse comparison improves", []string{"--threshold", "5%", fx("slower.json"), fx("base.json")}, 0,
			[]string{"+20.0%", "-23.1%", "better"}, nil, true},
		{"within the threshold passes", []string{"--threshold", "5%", fx("base.json"), fx("slightly-worse.json")}, 0,
			[]string{"-3.0%", "+4.0%", "worse"}, nil, true},
		{"a tighter threshold catches it", []string{"--threshold=2", fx("base.json"), fx("slightly-worse.json")}, 1,
			nil, []string{"2 regression(s) beyond 2%"}, false},
		{"without a threshold it only reports", []string{fx("base.json"), fx("slower.json")}, 0,
			[]string{"REGRESSION"}, nil, true},
		{"flags after the files", []string{fx("base.json"), fx("slower.json"), "--threshold", "50%"}, 0, nil, nil, true},
		{"metric filter", []string{"--threshold", "5%", "--metrics", "^latency_", fx("base.json"), fx("slower.json")}, 1,
			nil, []string{"1 regression(s)", "latency_p99_us"}, false},
		{"three reports, a bench among them", []string{"--threshold", "5%", fx("base.json"), fx("faster.json"), fx("bench.json")}, 0,
			[]string{"faster", "bench", "ns_per_delivery", "missing"}, nil, false},
		{"one report", []string{fx("base.json")}, 2, nil, []string{"at least two"}, false},
		{"missing file", []string{fx("base.json"), fx("nope.json")}, 2, nil, []string{"nope.json"}, false},
		{"bad threshold", []string{"--threshold", "lots", fx("base.json"), fx("faster.json")}, 2, nil, nil, false},
		{"an old report and a new one of the same workload compare cleanly", []string{"--threshold", "5%", fx("old-rate20.json"), fx("rate20.json")}, 0,
			[]string{"verdict: OK: nothing worse than old-rate20 beyond 5%"}, nil, true},
		{"different rates: flagged, judged, and warned about", []string{"--threshold", "5%", fx("old-rate20.json"), fx("rate40.json")}, 1,
			[]string{"verdict: REGRESSION: 1 worse than old-rate20 beyond 5%: latency_p99_us +44.4%; NOT LIKE FOR LIKE", "warning: workloads differ: rate: old-rate20 20, rate40 40"},
			[]string{"1 regression(s) beyond 5%", "the runs' workloads differ, so these may not be regressions"}, false},
		{"--strict refuses different workloads", []string{"--strict", fx("rate20.json"), fx("rate40.json")}, 3,
			nil, []string{"--strict: the runs' workloads differ", "rate: rate20 20, rate40 40"}, false},
		{"--strict accepts the same workload", []string{fx("old-rate20.json"), fx("rate20.json"), "--strict"}, 0, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			code := compareMain(tt.args, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out.String(), errb.String())
			}
			if tt.code != 2 && !strings.HasPrefix(out.String(), "verdict: ") {
				t.Errorf("stdout does not start with the verdict:\n%s", out.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errb.String())
				}
			}
			if tt.noStderr && errb.Len() > 0 {
				t.Errorf("unexpected stderr: %s", errb.String())
			}
		})
	}
}

func TestCompareHTML(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "cmp.html")
	var so, se bytes.Buffer
	args := []string{"--html", out, filepath.Join("testdata", "compare", "base.json"), filepath.Join("testdata", "compare", "slower.json")}
	if code := compareMain(args, &so, &se); code != 0 {
		t.Fatalf("exit %d: %s", code, se.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"<svg", "Latency by percentile", "deliveries_per_sec", "regression"} {
		if !strings.Contains(page, want) {
			t.Errorf("comparison page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "src=") || strings.Contains(page, "href=") {
		t.Error("comparison page is not self-contained")
	}
}
