package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Verdict is how a metric changed against the baseline, judged by its Better.
type Verdict string

// Verdicts of a Cell.
const (
	Same       Verdict = "same"       // no change
	Improved   Verdict = "better"     // changed in the better direction
	Worse      Verdict = "worse"      // changed in the worse direction, within the threshold
	Regression Verdict = "REGRESSION" // changed in the worse direction beyond the threshold
	Changed    Verdict = "changed"    // changed, but the metric has no direction
	Missing    Verdict = "missing"    // absent from this report or the baseline
)

// CompareOptions tunes Compare. The zero value compares every metric and judges
// every worse change a regression (no tolerance).
type CompareOptions struct {
	// Threshold is the tolerated worsening in percent of the baseline value:
	// with 5, a latency 4% higher is "worse" but not a regression. Zero means
	// any worsening is a regression.
	Threshold float64
	// Include, when set, limits the comparison to metric names it matches.
	Include *regexp.Regexp
}

// Cell is one report's value of one metric, relative to the baseline.
type Cell struct {
	Present  bool
	Value    float64
	Delta    float64 // Value − baseline
	DeltaPct float64 // Delta in percent of |baseline|; ±Inf when the baseline is 0
	Verdict  Verdict
}

// Row is one metric across all reports; Cells[0] is the baseline.
type Row struct {
	Name   string
	Unit   string
	Better Better
	Cells  []Cell
}

// Comparison is the result of Compare.
type Comparison struct {
	Labels    []string
	Reports   []*Report
	Threshold float64
	Rows      []Row
	// Warnings say where the reports are not like for like (other host, cores,
	// Go version, schema).
	Warnings []string
	// WorkloadDiffs say where the reports' workloads differ ("rate: base 20,
	// after 40"): their metrics then measure different things.
	WorkloadDiffs []string
}

// Compare lines up the metrics of reports (the first is the baseline) by name.
// labels name the reports in output; nil uses each report's Name.
func Compare(reports []*Report, labels []string, opts CompareOptions) *Comparison {
	c := &Comparison{Reports: reports, Threshold: opts.Threshold}
	for i, r := range reports {
		l := r.Name
		if i < len(labels) && labels[i] != "" {
			l = labels[i]
		}
		c.Labels = append(c.Labels, l)
	}
	index := map[string]int{}
	for _, r := range reports {
		for _, m := range r.Metrics {
			if opts.Include != nil && !opts.Include.MatchString(m.Name) {
				continue
			}
			if _, ok := index[m.Name]; !ok {
				index[m.Name] = len(c.Rows)
				c.Rows = append(c.Rows, Row{Name: m.Name, Unit: m.Unit, Better: m.Better, Cells: make([]Cell, len(reports))})
			}
		}
	}
	for i, r := range reports {
		for _, m := range r.Metrics {
			if j, ok := index[m.Name]; ok {
				c.Rows[j].Cells[i] = Cell{Present: true, Value: m.Value}
			}
		}
	}
	for ri := range c.Rows {
		row := &c.Rows[ri]
		base := row.Cells[0]
		for i := range row.Cells {
			cell := &row.Cells[i]
			if i == 0 {
				if !cell.Present {
					cell.Verdict = Missing
				}
				continue
			}
			if !cell.Present || !base.Present {
				cell.Verdict = Missing
				continue
			}
			cell.Delta = cell.Value - base.Value
			switch {
			case cell.Delta == 0:
				cell.DeltaPct = 0
			case base.Value == 0:
				cell.DeltaPct = math.Inf(int(math.Copysign(1, cell.Delta)))
			default:
				cell.DeltaPct = cell.Delta / math.Abs(base.Value) * 100
			}
			cell.Verdict = judge(row.Better, cell.Delta, cell.DeltaPct, opts.Threshold)
		}
	}
	c.Warnings = envWarnings(reports, c.Labels)
	c.WorkloadDiffs = workloadDiffs(reports, c.Labels)
	return c
}

// workload returns r's workload: r.Workload, or for a report written before
// workloads were recorded, the scalar settings at the top of its Config.
func workload(r *Report) map[string]string {
	if r.Workload != nil {
		return r.Workload
	}
	var cfg map[string]json.RawMessage
	if json.Unmarshal(r.Config, &cfg) != nil {
		return nil
	}
	out := map[string]string{}
	for k, raw := range cfg {
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if dec.Decode(&v) != nil {
			continue
		}
		switch x := v.(type) {
		case string:
			out[k] = x
		case json.Number:
			out[k] = x.String()
		case bool:
			out[k] = strconv.FormatBool(x)
		}
	}
	return out
}

// sameSetting says whether two workload values mean the same: equal text,
// equal numbers ("20", "20.0"), or equal durations, one of which may be a
// number of nanoseconds as older reports wrote them ("10s", "10000000000").
func sameSetting(a, b string) bool {
	if a == b {
		return true
	}
	fa, errA := strconv.ParseFloat(a, 64)
	fb, errB := strconv.ParseFloat(b, 64)
	if errA == nil && errB == nil {
		return fa == fb
	}
	da, okA := asDuration(a)
	db, okB := asDuration(b)
	return okA && okB && da == db
}

// asDuration reads "10s" or a whole number of nanoseconds.
func asDuration(s string) (time.Duration, bool) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, true
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(n), true
	}
	return 0, false
}

// workloadDiffs lists the settings that differ between each report and the
// baseline, among those both record.
func workloadDiffs(reports []*Report, labels []string) []string {
	if len(reports) < 2 {
		return nil
	}
	base := workload(reports[0])
	var out []string
	for i, r := range reports[1:] {
		w := workload(r)
		keys := make([]string, 0, len(w))
		for k := range w {
			if _, ok := base[k]; ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			if !sameSetting(base[k], w[k]) {
				out = append(out, fmt.Sprintf("%s: %s %s, %s %s", k, labels[0], base[k], labels[i+1], w[k]))
			}
		}
	}
	return out
}

// Comparable says whether the reports measured the same workload, as far as
// they record it.
func (c *Comparison) Comparable() bool { return len(c.WorkloadDiffs) == 0 }

// Verdict sums the comparison up in one line: whether a metric regressed
// beyond the threshold against the baseline, and whether the runs are like
// for like.
func (c *Comparison) Verdict() string {
	var regs []string
	var better, worse, same int
	for _, row := range c.Rows {
		for i, cell := range row.Cells[1:] {
			switch cell.Verdict {
			case Regression:
				r := row.Name + " " + pctString(cell.DeltaPct)
				if len(c.Labels) > 2 {
					r += " in " + c.Labels[i+1]
				}
				regs = append(regs, r)
			case Improved:
				better++
			case Worse:
				worse++
			case Same, Changed:
				same++
			}
		}
	}
	beyond := fmt.Sprintf("beyond %s%%", strconv.FormatFloat(c.Threshold, 'f', -1, 64))
	if c.Threshold == 0 {
		beyond = "by any amount (no threshold)"
	}
	base := ""
	if len(c.Labels) > 0 {
		base = c.Labels[0]
	}
	var v string
	if len(regs) > 0 {
		list := regs
		if len(list) > 4 {
			list = append(list[:4:4], fmt.Sprintf("and %d more", len(regs)-4))
		}
		v = fmt.Sprintf("REGRESSION: %d worse than %s %s: %s", len(regs), base, beyond, strings.Join(list, ", "))
	} else {
		v = fmt.Sprintf("OK: nothing worse than %s %s (%d better, %d worse within it, %d unchanged)", base, beyond, better, worse, same)
	}
	if !c.Comparable() {
		v += fmt.Sprintf("; NOT LIKE FOR LIKE: the runs' workloads differ (%d setting(s), see below)", len(c.WorkloadDiffs))
	}
	return v
}

// judge returns the verdict of a change of delta (pct percent) for a metric
// whose better direction is better.
func judge(better Better, delta, pct, threshold float64) Verdict {
	if delta == 0 {
		return Same
	}
	var improved bool
	switch better {
	case HigherIsBetter:
		improved = delta > 0
	case LowerIsBetter:
		improved = delta < 0
	default:
		return Changed
	}
	if improved {
		return Improved
	}
	if math.Abs(pct) > threshold {
		return Regression
	}
	return Worse
}

// Regressions returns "metric: label" for every regression.
func (c *Comparison) Regressions() []string {
	var out []string
	for _, row := range c.Rows {
		for i, cell := range row.Cells {
			if cell.Verdict == Regression {
				out = append(out, fmt.Sprintf("%s: %s %s → %s (%s)", row.Name, c.Labels[i],
					fmtNum(row.Cells[0].Value), fmtNum(cell.Value), pctString(cell.DeltaPct)))
			}
		}
	}
	return out
}

func envWarnings(reports []*Report, labels []string) []string {
	if len(reports) < 2 {
		return nil
	}
	var w []string
	b := reports[0]
	for i, r := range reports[1:] {
		l := labels[i+1]
		if r.Env.Host != b.Env.Host {
			w = append(w, fmt.Sprintf("%s ran on host %q, the baseline on %q", l, r.Env.Host, b.Env.Host))
		}
		if r.Env.Cores != b.Env.Cores || r.Env.GOMAXPROCS != b.Env.GOMAXPROCS {
			w = append(w, fmt.Sprintf("%s had %d cores (GOMAXPROCS %d), the baseline %d (%d)", l,
				r.Env.Cores, r.Env.GOMAXPROCS, b.Env.Cores, b.Env.GOMAXPROCS))
		}
		if r.Env.GoVersion != b.Env.GoVersion {
			w = append(w, fmt.Sprintf("%s was built with %s, the baseline with %s", l, r.Env.GoVersion, b.Env.GoVersion))
		}
		if r.Kind != b.Kind {
			w = append(w, fmt.Sprintf("%s is a %s report, the baseline a %s report: only shared metric names compare", l, r.Kind, b.Kind))
		}
	}
	return w
}

func pctString(p float64) string {
	switch {
	case math.IsInf(p, 1):
		return "+inf%"
	case math.IsInf(p, -1):
		return "-inf%"
	case p == 0:
		return "0%"
	}
	return fmt.Sprintf("%+.1f%%", p)
}

func deltaString(d float64) string {
	if d > 0 {
		return "+" + fmtNum(d)
	}
	return fmtNum(d)
}

// WriteText writes the verdict, the warnings, and the comparison as an
// aligned plain-text table.
func (c *Comparison) WriteText(w io.Writer) error {
	fmt.Fprintln(w, "verdict:", c.Verdict())
	for _, d := range c.WorkloadDiffs {
		fmt.Fprintln(w, "warning: workloads differ:", d)
	}
	for _, wn := range c.Warnings {
		fmt.Fprintln(w, "warning:", wn)
	}
	fmt.Fprintln(w)
	// Numbers align right; the metric names are padded to one width so that
	// they read left-aligned.
	nameW := len("metric")
	for _, row := range c.Rows {
		nameW = max(nameW, len(row.Name))
	}
	pad := func(s string) string { return s + strings.Repeat(" ", nameW-len(s)) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := []string{pad("metric"), "unit", c.Labels[0]}
	for _, l := range c.Labels[1:] {
		hdr = append(hdr, l, "Δ", "Δ%", "")
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")
	for _, row := range c.Rows {
		cols := []string{pad(row.Name), displayUnitName(row.Unit), cellValue(row.Cells[0])}
		for _, cell := range row.Cells[1:] {
			if !cell.Present || !row.Cells[0].Present {
				cols = append(cols, cellValue(cell), "", "", string(Missing))
				continue
			}
			v := string(cell.Verdict)
			if cell.Verdict == Same {
				v = "="
			}
			cols = append(cols, cellValue(cell), deltaString(cell.Delta), pctString(cell.DeltaPct), v)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	}
	return tw.Flush()
}

func cellValue(c Cell) string {
	if !c.Present {
		return "-"
	}
	return fmtNum(c.Value)
}

var comparePage = template.Must(template.New("compare").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>shardhub report comparison</title>
<style>{{.Style}}</style></head><body>
<h1>Comparison</h1>
<p class="verdict {{.VerdictClass}}">{{.C.Verdict}}</p>
<div class="sub">baseline: {{index .C.Labels 0}}{{if .C.Threshold}} · regression threshold {{.C.Threshold}}%{{end}}</div>
{{if or .C.WorkloadDiffs .C.Warnings}}<ul>{{range .C.WorkloadDiffs}}<li class="worse">workloads differ: {{.}}</li>{{end}}{{range .C.Warnings}}<li class="worse">{{.}}</li>{{end}}</ul>{{end}}
<h2>Reports</h2>
<table><tr><th>label</th><th>kind</th><th>name</th><th>started</th><th>host</th><th>cores</th><th>go</th><th>revision</th><th>workload</th></tr>
{{range $i, $r := .C.Reports}}<tr><td>{{index $.C.Labels $i}}</td><td>{{$r.Kind}}</td><td>{{$r.Name}}</td><td>{{$r.Started.Format "2006-01-02 15:04"}}</td><td>{{$r.Env.Host}}</td><td>{{$r.Env.Cores}}</td><td>{{$r.Env.GoVersion}}</td><td>{{$r.Env.GitRevision}}</td><td class="sub">{{call $.Workload $r}}</td></tr>
{{end}}</table>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>unit</th><th>better</th>{{range .C.Labels}}<th class="n">{{.}}</th>{{end}}</tr>
{{range .C.Rows}}<tr><td>{{.Name}}</td><td>{{unit .Unit}}</td><td>{{.Better}}</td>{{range $i, $c := .Cells}}<td class="n">{{if $c.Present}}{{num $c.Value}}{{else}}-{{end}}{{if and $i $c.Present (ne (print $c.Verdict) "missing")}}<br/><span class="{{call $.Class $c.Verdict}}">{{call $.Delta $c}}</span>{{end}}</td>{{end}}</tr>
{{end}}</table>
{{if .LatencyChart}}<h2>Latency</h2>{{.LatencyChart}}{{end}}
{{if .Series}}<h2>Over time</h2>{{range .Series}}{{.}}{{end}}{{end}}
</body></html>
`))

// WriteHTML writes the comparison as a self-contained HTML page: the metrics
// table with deltas, overlaid latency percentile curves and the time series the
// reports share.
func (c *Comparison) WriteHTML(w io.Writer) error {
	data := struct {
		C            *Comparison
		Style        template.CSS
		LatencyChart template.HTML
		Series       []template.HTML
		Class        func(Verdict) string
		Delta        func(Cell) string
		VerdictClass string
		Workload     func(*Report) string
	}{C: c, Style: template.CSS(style), VerdictClass: "pass", Workload: func(r *Report) string { return workloadText(workload(r)) }}
	if len(c.Regressions()) > 0 || !c.Comparable() {
		data.VerdictClass = "fail"
	}
	data.Class = func(v Verdict) string {
		switch v {
		case Improved:
			return "better"
		case Worse:
			return "worse"
		case Regression:
			return "regression"
		}
		return "sub"
	}
	data.Delta = func(cell Cell) string {
		return fmt.Sprintf("%s (%s) %s", deltaString(cell.Delta), pctString(cell.DeltaPct), cell.Verdict)
	}
	var ls []*Latency
	haveLatency := false
	for _, r := range c.Reports {
		ls = append(ls, r.Latency)
		haveLatency = haveLatency || r.Latency != nil
	}
	if haveLatency {
		data.LatencyChart = latencyChart("Latency by percentile", c.Labels, ls)
	}
	// Series present in every report are overlaid.
	if len(c.Reports) > 0 {
		for _, s := range c.Reports[0].Timeseries {
			ss := []Series{s}
			for _, r := range c.Reports[1:] {
				if o, ok := r.Series(s.Name); ok {
					ss = append(ss, o)
				}
			}
			if len(ss) == len(c.Reports) {
				data.Series = append(data.Series, seriesChart(s.Name, s.Unit, c.Labels, ss, nil))
			}
		}
	}
	return comparePage.Execute(w, data)
}

// WriteHTMLFile writes the comparison page to path.
func (c *Comparison) WriteHTMLFile(path string) error {
	var buf bytes.Buffer
	if err := c.WriteHTML(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
