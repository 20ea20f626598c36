package loadtest

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		res    Result
		limits Limits
		checks []string // failed checks, in order
		detail []string // substrings of the details
	}{
		{"all refused", Result{Config: Config{Conns: 50},
			Counts: Counts{Attempted: 50, Failed: 50, Errors: map[string]int64{"connect_refused": 50}}},
			DefaultLimits, []string{CheckConnections}, []string{"50 of 50 connections failed (100%, limit 1%)", "refused 50"}},
		{"within the connection limit", Result{Config: Config{Conns: 1000}, Counted: 995,
			Counts: Counts{Attempted: 1000, Connected: 995, Failed: 5}},
			DefaultLimits, nil, nil},
		{"not ready and lost", Result{Config: Config{Conns: 10}, Counted: 8,
			Counts: Counts{Attempted: 10, Connected: 10, Dropped: 1, Lost: 1}},
			Limits{}, []string{CheckConnections}, []string{"3 of 10", "2 opened but were not ready", "1 dropped during it"}},
		{"every publish 404", Result{Config: Config{Conns: 5}, Counted: 5, Published: 30, PublishFailed: 30,
			Errors: map[string]int64{"publish_http_404": 30}},
			DefaultLimits, []string{CheckPublishes}, []string{"30 of 30 publishes failed", "http_404 30"}},
		{"loss", Result{Config: Config{Conns: 5}, Counted: 5, Published: 10, Expected: 50, Counts: Counts{Unique: 49}},
			DefaultLimits, []string{CheckDeliveries}, []string{"1 of 50 expected deliveries lost (2%, limit 0%)"}},
		{"loss within a limit", Result{Config: Config{Conns: 5}, Counted: 5, Published: 10, Expected: 50, Counts: Counts{Unique: 49}},
			Limits{LossPct: 5}, nil, nil},
		{"everything at once, in order", Result{Config: Config{Conns: 4}, Counted: 2, Published: 4, PublishFailed: 2, Expected: 4},
			Limits{}, []string{CheckConnections, CheckPublishes, CheckDeliveries}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fails := tt.res.Check(tt.limits)
			var got []string
			var details string
			for _, f := range fails {
				got = append(got, f.Check)
				details += f.Detail + "\n"
			}
			if strings.Join(got, ",") != strings.Join(tt.checks, ",") {
				t.Fatalf("failed checks %v, want %v\n%s", got, tt.checks, details)
			}
			for _, d := range tt.detail {
				if !strings.Contains(details, d) {
					t.Errorf("details lack %q:\n%s", d, details)
				}
			}
			if o := tt.res.Outcome(tt.limits); o.Pass != (len(tt.checks) == 0) || len(o.Failures) != len(tt.checks) {
				t.Errorf("outcome %+v", o)
			}
		})
	}
}
