package report

import (
	"bytes"
	"encoding/json"
	"html/template"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// style is inlined into every page: the HTML must open from a file, offline.
const style = `
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f6f6f6}
.verdict{font-size:16px;font-weight:600;padding:8px 12px;margin:8px 0;border-left:6px solid}
.verdict.pass{border-color:#1a7f37;background:#eef8f0}.verdict.fail{border-color:#b42318;background:#fdf0ef}
.sub{color:#666}.better{color:#1a7f37}.worse{color:#b42318}.regression{color:#fff;background:#b42318;padding:0 4px}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:360px}
svg.chart{display:block;margin:8px 0;background:#fff;width:100%;height:auto}
svg .phase{fill:#f0f4fa}svg .phaselab{fill:#557;font-size:11px}
svg .grid{stroke:#eee}svg .axis{stroke:#999}svg text{font:11px system-ui,sans-serif;fill:#333}
svg .title{font-size:13px;font-weight:600}svg .ylab{text-anchor:end}svg .xlab{text-anchor:middle}
svg .axlab{text-anchor:middle;fill:#666}svg .legend{font-size:11px}
`

var funcs = template.FuncMap{
	"num":  fmtNum,
	"full": FormatValue,
	"unit": displayUnitName,
	"int":  func(v int64) string { return withCommas(v) },
	"dur": func(sec float64) string {
		return time.Duration(sec * float64(time.Second)).Round(time.Millisecond).String()
	},
	"mib": func(v uint64) string { return fmtNum(float64(v)/(1<<20)) + " MiB" },
}

var reportPage = template.Must(template.New("report").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>{{.R.Name}} — shardhub {{.R.Kind}} report</title>
<style>{{.Style}}</style></head><body>
<h1>{{.R.Name}}</h1>
{{with .R.Outcome}}<p class="verdict {{if .Pass}}pass{{else}}fail{{end}}">{{.Summary}}</p>{{if .Failures}}<ul>{{range .Failures}}<li class="worse">{{.}}</li>{{end}}</ul>{{end}}{{end}}
<div class="sub">{{.R.Kind}} · started {{.R.Started.Format "2006-01-02 15:04:05 MST"}}{{if .R.DurationSeconds}} · took {{dur .R.DurationSeconds}}{{end}} · {{.R.Env.Host}} · {{.R.Env.Cores}} cores · {{.R.Env.GoVersion}}{{if .R.Env.GitRevision}} · {{.R.Env.GitRevision}}{{end}} · schema {{.R.Schema}}</div>
{{if .Workload}}<div class="sub">workload: {{.Workload}}</div>{{end}}
{{if .R.Notes}}<h2>Notes</h2><ul>{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
<h2>Metrics</h2>
<table><tr><th>metric</th><th>value</th><th>unit</th><th>better</th><th></th></tr>
{{range .R.Metrics}}<tr><td>{{.Name}}</td><td class="n">{{full .Value}}</td><td>{{unit .Unit}}</td><td>{{.Better}}</td><td class="sub">{{.Help}}</td></tr>
{{end}}</table>
{{with .R.Latency}}<h2>Latency ({{$.LatUnit}})</h2>
<div class="sub">{{int .Count}} samples · min {{call $.Lat .Min}} · mean {{call $.Lat .Mean}} · stddev {{call $.Lat .StdDev}} · max {{call $.Lat .Max}} {{$.LatUnit}}</div>
{{$.LatencyChart}}
<table><tr><th>percentile</th><th class="n">{{$.LatUnit}}</th></tr>{{range .Percentiles}}<tr><td>{{.P}}</td><td class="n">{{call $.Lat .Value}}</td></tr>{{end}}</table>
{{if .Buckets}}{{$.BucketChart}}{{end}}
{{end}}
{{if .Series}}<h2>Over time</h2>{{range .Series}}{{.}}{{end}}{{end}}
{{if .R.Errors}}<h2>Errors</h2><table><tr><th>kind</th><th>count</th></tr>{{range $k, $v := .R.Errors}}<tr><td>{{$k}}</td><td class="n">{{int $v}}</td></tr>{{end}}</table>{{end}}
{{range .R.Server}}<h2>Server {{.Instance}}</h2>
{{if .After}}<table><tr><th>sample</th><th>before</th><th>after</th><th>change</th></tr>{{range call $.ServerRows .}}<tr><td>{{.Name}}</td><td class="n">{{full .Before}}</td><td class="n">{{full .After}}</td><td class="n">{{full .Delta}}</td></tr>{{end}}</table>{{else}}<div class="sub">no metrics scraped</div>{{end}}
{{if .Memory}}<table><tr><th>t (s)</th><th>conns</th><th>heap in use</th><th>stacks</th><th>Go total</th><th>RSS</th><th>goroutines</th></tr>{{range .Memory}}<tr><td class="n">{{num .T}}</td><td class="n">{{int .Conns}}</td><td class="n">{{mib .HeapInuse}}</td><td class="n">{{mib .StackInuse}}</td><td class="n">{{mib .GoTotal}}</td><td class="n">{{mib .RSS}}</td><td class="n">{{.Goroutines}}</td></tr>{{end}}</table>{{end}}
{{end}}
<h2>Environment</h2>
<table>
<tr><td>host</td><td>{{.R.Env.Host}} ({{.R.Env.OS}}/{{.R.Env.Arch}}, kernel {{.R.Env.Kernel}})</td></tr>
<tr><td>cpu</td><td>{{.R.Env.CPUModel}} · {{.R.Env.Cores}} cores · GOMAXPROCS {{.R.Env.GOMAXPROCS}}</td></tr>
<tr><td>go</td><td>{{.R.Env.GoVersion}} · module {{.R.Env.Module}}</td></tr>
<tr><td>revision</td><td>{{.R.Env.GitRevision}}{{if .R.Env.GitDirty}} (dirty){{end}}</td></tr>
<tr><td>open files</td><td>{{index .R.Env.RlimitNofile 0}} soft / {{index .R.Env.RlimitNofile 1}} hard</td></tr>
{{range $k, $v := .R.Env.Sysctl}}<tr><td>{{$k}}</td><td>{{$v}}</td></tr>{{end}}
<tr><td>command</td><td><code>{{.Args}}</code></td></tr>
</table>
{{if .Config}}<h2>Configuration</h2><pre>{{.Config}}</pre>{{end}}
</body></html>
`))

// serverRow is one Prometheus sample shown for a server.
type serverRow struct {
	Name                 string
	Before, After, Delta float64
}

// interestingSample keeps the HTML table short: the shardhub counters and the
// process CPU and memory, not every per-shard gauge.
func interestingSample(name string) bool {
	if strings.HasPrefix(name, "shardhub_shard_") {
		return false
	}
	return strings.HasPrefix(name, "shardhub_") || strings.HasPrefix(name, "process_cpu_seconds") ||
		strings.HasPrefix(name, "process_resident_memory_bytes") || name == "go_goroutines"
}

func serverRows(s Server) []serverRow {
	var rows []serverRow
	for name, after := range s.After {
		if !interestingSample(name) {
			continue
		}
		before := s.Before[name]
		if after == 0 && before == 0 {
			continue
		}
		rows = append(rows, serverRow{Name: name, Before: before, After: after, Delta: after - before})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows
}

// WriteHTML writes r as one self-contained HTML page: inline CSS and SVG
// charts, no scripts, no external resources.
func (r *Report) WriteHTML(w io.Writer) error {
	data := struct {
		R            *Report
		Style        template.CSS
		LatencyChart template.HTML
		BucketChart  template.HTML
		Series       []template.HTML
		ServerRows   func(Server) []serverRow
		Config       string
		Args         string
		Workload     string
		LatUnit      string
		Lat          func(float64) string
	}{R: r, Style: template.CSS(style), ServerRows: serverRows, Args: shellQuote(r.Env.Args), Workload: workloadText(r.Workload)}
	if r.Latency != nil {
		unit, scale, ok := displayUnit(r.Latency)
		data.LatUnit = unit
		data.Lat = FormatValue
		if ok {
			data.Lat = latencyFormatter(unit, scale[0])
		}
		data.LatencyChart = latencyChart("Latency by percentile", []string{r.Name}, []*Latency{r.Latency})
		if len(r.Latency.Buckets) > 0 {
			data.BucketChart = bucketChart(r.Latency)
		}
	}
	for _, s := range r.Timeseries {
		data.Series = append(data.Series, seriesChart(s.Name, s.Unit, []string{r.Name}, []Series{s}, r.Phases))
	}
	if len(r.Config) > 0 {
		var buf bytes.Buffer
		if json.Indent(&buf, r.Config, "", "  ") == nil {
			data.Config = buf.String()
		} else {
			data.Config = string(r.Config)
		}
	}
	return reportPage.Execute(w, data)
}

// WriteHTMLFile writes the HTML page to path.
func (r *Report) WriteHTMLFile(path string) error {
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// latencyFormatter formats a latency recorded in its own unit in unit (µs,
// ms or s) after multiplying by scale, with the decimals that unit wants, so
// that every value of one table reads alike.
func latencyFormatter(unit string, scale float64) func(float64) string {
	decimals := map[string]int{"µs": 0, "ms": 2, "s": 3}[unit]
	return func(v float64) string { return fixed(v*scale, decimals) }
}

// fixed formats v with decimals digits after the point and thousands commas.
func fixed(v float64, decimals int) string {
	s := strconv.FormatFloat(math.Abs(v), 'f', decimals, 64)
	whole, frac, _ := strings.Cut(s, ".")
	n, _ := strconv.ParseInt(whole, 10, 64)
	out := withCommas(n)
	if frac != "" {
		out += "." + frac
	}
	if v < 0 && strings.Trim(out, "0.,") != "" {
		out = "-" + out
	}
	return out
}

// FormatValue formats a metric value for people, the same in every table and
// summary: thousands separators, whole numbers as they are, other values with
// one decimal from 100 up and three below ("12,000", "4,354.3", "0.242").
func FormatValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) >= 1e15:
		return fmtNum(v)
	case v == math.Trunc(v):
		return withCommas(int64(v))
	case math.Abs(v) >= 100:
		return fixed(v, 1)
	}
	return fixed(v, 3)
}

// displayUnitName shows a metric unit as people write it ("us" is µs).
func displayUnitName(u string) string {
	if u == "us" {
		return "µs"
	}
	return u
}

// workloadText renders a workload as "conns=1000 rate=20 …", sorted by name.
func workloadText(w map[string]string) string {
	keys := make([]string, 0, len(w))
	for k := range w {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+w[k])
	}
	return strings.Join(parts, " ")
}

// shellQuote renders a command line so that it can be pasted back into a
// POSIX shell: arguments of plain characters stay as they are, any other is
// put in single quotes (a single quote inside becomes '\”). A dozen lines
// do not warrant a dependency.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=+.,:/@%") == "" {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

func withCommas(v int64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	s := []byte(strings.TrimSpace(fmtInt(v)))
	var out []byte
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
