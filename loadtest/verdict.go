package loadtest

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/shardhub/shardhub/loadtest/report"
)

// Limits are what a run may lose and still pass (Result.Check), each in
// percent. The zero value tolerates nothing: any failed connection, failed
// publish or lost delivery fails the run.
type Limits struct {
	// ConnFailuresPct bounds the connections, in percent of Config.Conns, that
	// failed to open, were not ready when the measured phase began, or were
	// lost after it began.
	ConnFailuresPct float64
	// PublishFailuresPct bounds the publishes, in percent of those attempted,
	// that failed: an HTTP answer other than 2xx, a timeout, a failed write.
	PublishFailuresPct float64
	// LossPct bounds the expected deliveries, in percent, that never arrived.
	LossPct float64
}

// DefaultLimits are `shardhub loadtest`'s limits unless its flags say
// otherwise: 1% of connections and of publishes may fail (a few timeouts in a
// large ramp are the network's, not the server's), and no delivery may be lost.
var DefaultLimits = Limits{ConnFailuresPct: 1, PublishFailuresPct: 1}

// The checks of a run, in the order Result.Check reports their failures.
const (
	CheckConnections = "connections"
	CheckPublishes   = "publishes"
	CheckDeliveries  = "deliveries"
)

// Failure is one check a run failed.
type Failure struct {
	// Check is CheckConnections, CheckPublishes or CheckDeliveries.
	Check string
	// Detail says what happened against which limit, in one line.
	Detail string
}

// Check judges the run against l and returns the checks it failed, in the
// order of the Check constants; none means it passed.
func (r *Result) Check(l Limits) []Failure {
	var out []Failure
	c := r.Counts
	target := int64(r.Config.Conns)
	// A connection fails when it never got counted (did not open, or was not
	// ready in time), or when it was lost after it was.
	if bad := max(target-r.Counted, 0) + c.Lost; target > 0 && over(bad, target, l.ConnFailuresPct) {
		var why []string
		if n := target - c.Attempted; n > 0 {
			why = append(why, fmt.Sprintf("%d never dialled", n))
		}
		if c.Failed > 0 {
			why = append(why, fmt.Sprintf("%d did not open (%s)", c.Failed, topErrors(c.Errors, "connect_", 3)))
		}
		if n := c.Connected - r.Counted - (c.Dropped - c.Lost); n > 0 {
			why = append(why, fmt.Sprintf("%d opened but were not ready", n))
		}
		if n := c.Dropped - c.Lost; n > 0 {
			why = append(why, fmt.Sprintf("%d dropped without being counted", n))
		}
		if c.Lost > 0 {
			why = append(why, fmt.Sprintf("%d dropped during it", c.Lost))
		}
		out = append(out, Failure{CheckConnections, fmt.Sprintf("%s of %s connections failed (%s, limit %s): %s",
			num(bad), num(target), pct(bad, target), pctLimit(l.ConnFailuresPct), strings.Join(why, ", "))})
	}
	if r.Published > 0 && over(r.PublishFailed, r.Published, l.PublishFailuresPct) {
		out = append(out, Failure{CheckPublishes, fmt.Sprintf("%s of %s publishes failed (%s, limit %s): %s",
			num(r.PublishFailed), num(r.Published), pct(r.PublishFailed, r.Published), pctLimit(l.PublishFailuresPct), topErrors(r.Errors, "publish_", 3))})
	}
	if lost := r.Loss(); r.Expected > 0 && over(lost, r.Expected, l.LossPct) {
		out = append(out, Failure{CheckDeliveries, fmt.Sprintf("%s of %s expected deliveries lost (%s, limit %s)",
			num(lost), num(r.Expected), pct(lost, r.Expected), pctLimit(l.LossPct))})
	}
	return out
}

// Outcome is the run's judgement against l, for its report.
func (r *Result) Outcome(l Limits) *report.Outcome {
	fails := r.Check(l)
	o := &report.Outcome{Pass: len(fails) == 0}
	for _, f := range fails {
		o.Failures = append(o.Failures, f.Detail)
	}
	switch {
	case r.Interrupted:
		o.Pass = false
		o.Summary = "INTERRUPTED: the run was stopped before it completed"
	case o.Pass:
		o.Summary = fmt.Sprintf("PASS: %s", r.passSummary())
	default:
		checks := make([]string, len(fails))
		for i, f := range fails {
			checks[i] = f.Check
		}
		o.Summary = fmt.Sprintf("FAIL: %s failed their limits", strings.Join(checks, " and "))
	}
	return o
}

// passSummary says in a few words what a passing run achieved.
func (r *Result) passSummary() string {
	s := fmt.Sprintf("%s of %s connections counted", num(r.Counted), num(int64(r.Config.Conns)))
	if r.Expected > 0 {
		s += fmt.Sprintf(", %s of %s deliveries", num(r.Counts.Unique), num(r.Expected))
	}
	return s
}

// num formats a count with thousands separators.
func num(n int64) string { return report.FormatValue(float64(n)) }

// over says whether n of total is above limit percent.
func over(n, total int64, limit float64) bool {
	return n > 0 && float64(n)*100 > limit*float64(total)
}

func pct(n, total int64) string {
	return strconv.FormatFloat(float64(n)*100/float64(total), 'g', 3, 64) + "%"
}

func pctLimit(l float64) string { return strconv.FormatFloat(l, 'g', -1, 64) + "%" }

// topErrors lists the n most frequent error kinds starting with prefix, as
// "kind count" (the prefix dropped), most frequent first.
func topErrors(errs map[string]int64, prefix string, n int) string {
	type kv struct {
		k string
		v int64
	}
	var all []kv
	for k, v := range errs {
		if strings.HasPrefix(k, prefix) {
			all = append(all, kv{strings.TrimPrefix(k, prefix), v})
		}
	}
	if len(all) == 0 {
		return "no error recorded"
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || (all[i].v == all[j].v && all[i].k < all[j].k) })
	var parts []string
	for i, e := range all {
		if i == n {
			parts = append(parts, fmt.Sprintf("%d more kinds", len(all)-n))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", e.k, e.v))
	}
	return strings.Join(parts, ", ")
}
