package report

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
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
	return c
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

// WriteText writes the comparison as an aligned plain-text table.
func (c *Comparison) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := []string{"metric", "unit", c.Labels[0]}
	for _, l := range c.Labels[1:] {
		hdr = append(hdr, l, "Δ", "Δ%", "")
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t")+"\t")
	for _, row := range c.Rows {
		cols := []string{row.Name, row.Unit, cellValue(row.Cells[0])}
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
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, wn := range c.Warnings {
		fmt.Fprintln(w, "warning:", wn)
	}
	return nil
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
<div class="sub">baseline: {{index .C.Labels 0}}{{if .C.Threshold}} · regression threshold {{.C.Threshold}}%{{end}}</div>
{{if .C.Warnings}}<ul>{{range .C.Warnings}}<li class="worse">{{.}}</li>{{end}}</ul>{{end}}
<h2>Reports</h2>
<table><tr><th>label</th><th>kind</th><th>name</th><th>started</th><th>host</th><th>cores</th><th>go</th><th>revision</th></tr>
{{range $i, $r := .C.Reports}}<tr><td>{{index $.C.Labels $i}}</td><td>{{$r.Kind}}</td><td>{{$r.Name}}</td><td>{{$r.Started.Format "2006-01-02 15:04"}}</td><td>{{$r.Env.Host}}</td><td>{{$r.Env.Cores}}</td><td>{{$r.Env.GoVersion}}</td><td>{{$r.Env.GitRevision}}</td></tr>
{{end}}</table>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>unit</th><th>better</th>{{range .C.Labels}}<th>{{.}}</th>{{end}}</tr>
{{range .C.Rows}}<tr><td>{{.Name}}</td><td>{{.Unit}}</td><td>{{.Better}}</td>{{range $i, $c := .Cells}}<td class="n">{{if $c.Present}}{{num $c.Value}}{{else}}-{{end}}{{if and $i $c.Present (ne (print $c.Verdict) "missing")}}<br/><span class="{{call $.Class $c.Verdict}}">{{call $.Delta $c}}</span>{{end}}</td>{{end}}</tr>
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
	}{C: c, Style: template.CSS(style)}
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
				data.Series = append(data.Series, seriesChart(s.Name, s.Unit, c.Labels, ss))
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
