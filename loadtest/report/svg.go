package report

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// The charts are hand-written SVG rather than a charting library: the report
// needs two kinds of plot (lines over time, and latency by percentile on the
// HdrHistogram "nines" axis, which general chart libraries do not offer), and
// the output must be inline, self-contained markup. A hundred lines of SVG keep
// the report free of fonts, images and scripts.

// palette colours the lines of a chart, one per report or series.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// line is one polyline of a chart.
type line struct {
	label string
	x, y  []float64
}

// tick is an axis label at a data coordinate.
type tick struct {
	at    float64
	label string
}

// chart is a line chart with linear axes; xTicks may replace the x axis labels
// (the percentile chart does, to label its transformed axis).
type chart struct {
	title, xLabel, yLabel string
	lines                 []line
	xTicks                []tick
	bars                  bool   // draw the single line as a bar chart at x = 0,1,2…
	spans                 []Span // x ranges to shade and name (phases of a run)
}

// The chart's own coordinates; the page scales it to its full width (CSS
// width:100%), keeping the proportions.
const (
	chartW, chartH = 1100, 320
	padL, padR     = 70, 20
	padT, padB     = 30, 50
)

// render returns the chart as an <svg> element.
func (c chart) render() template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" preserveAspectRatio="xMinYMin meet" role="img" aria-label="%s">`,
		chartW, chartH, html.EscapeString(c.title))
	fmt.Fprintf(&b, `<text x="%d" y="18" class="title">%s</text>`, padL, html.EscapeString(c.title))
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, l := range c.lines {
		for i := range l.x {
			if i >= len(l.y) || !finite(l.x[i]) || !finite(l.y[i]) {
				continue
			}
			xmin, xmax = math.Min(xmin, l.x[i]), math.Max(xmax, l.x[i])
			ymax = math.Max(ymax, l.y[i])
		}
	}
	if math.IsInf(xmin, 0) {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no data</text></svg>`, chartW/2-30, chartH/2)
		return template.HTML(b.String())
	}
	if c.bars {
		xmin, xmax = -0.5, xmax+0.5
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	yt := niceTicks(0, ymax, 5)
	ytop := yt[len(yt)-1].at
	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	px := func(x float64) float64 { return padL + (x-xmin)/(xmax-xmin)*pw }
	py := func(y float64) float64 { return padT + ph - y/ytop*ph }
	// Phases, under everything else.
	for _, sp := range c.spans {
		x0, x1 := px(math.Max(sp.Start, xmin)), px(math.Min(sp.End, xmax))
		if x1 <= x0 {
			continue
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%.1f" class="phase"><title>%s</title></rect>`,
			x0, padT, x1-x0, ph, html.EscapeString(sp.Name))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="phaselab">%s</text>`, x0+4, padT+12, html.EscapeString(sp.Name))
	}
	// Grid and axes.
	for _, t := range yt {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="grid"/>`, padL, py(t.at), chartW-padR, py(t.at))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" class="ylab">%s</text>`, padL-6, py(t.at)+4, html.EscapeString(t.label))
	}
	xt := c.xTicks
	if xt == nil && !c.bars {
		xt = niceTicks(xmin, xmax, 8)
	}
	for _, t := range xt {
		if t.at < xmin || t.at > xmax {
			continue
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="grid"/>`, px(t.at), padT, px(t.at), chartH-padB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="xlab">%s</text>`, px(t.at), chartH-padB+16, html.EscapeString(t.label))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="axis"/>`, padL, chartH-padB, chartW-padR, chartH-padB)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="axis"/>`, padL, padT, padL, chartH-padB)
	fmt.Fprintf(&b, `<text x="%d" y="%d" class="axlab">%s</text>`, chartW/2, chartH-8, html.EscapeString(c.xLabel))
	fmt.Fprintf(&b, `<text x="14" y="%d" class="axlab" transform="rotate(-90 14 %d)">%s</text>`, chartH/2, chartH/2, html.EscapeString(c.yLabel))
	// Data.
	for i, l := range c.lines {
		col := palette[i%len(palette)]
		if c.bars {
			w := pw / (xmax - xmin) * 0.8
			for j := range l.x {
				if j >= len(l.y) || !finite(l.y[j]) {
					continue
				}
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
					px(l.x[j])-w/2, py(l.y[j]), w, py(0)-py(l.y[j]), col, html.EscapeString(fmtNum(l.y[j])))
			}
			continue
		}
		var pts strings.Builder
		for j := range l.x {
			if j >= len(l.y) || !finite(l.x[j]) || !finite(l.y[j]) {
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(l.x[j]), py(l.y[j]))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.TrimSpace(pts.String()), col)
		if len(c.lines) > 1 || l.label != "" {
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="4" fill="%s"/><text x="%d" y="%d" class="legend">%s</text>`,
				padL+10, padT+8+16*i, col, padL+26, padT+13+16*i, html.EscapeString(l.label))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceTicks returns about n ticks at 1-2-5 multiples covering [lo, hi].
func niceTicks(lo, hi float64, n int) []tick {
	if hi <= lo {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow10(int(math.Floor(math.Log10(raw))))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ts []tick
	for v := math.Floor(lo/step) * step; ; v += step {
		ts = append(ts, tick{at: v, label: fmtNum(v)})
		if v >= hi-step*1e-9 || len(ts) > 50 {
			break
		}
	}
	return ts
}

// percentileX maps a percentile to the "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
func percentileX(p float64) float64 {
	if p >= 100 {
		return math.NaN()
	}
	return -math.Log10(1 - p/100)
}

// percentileTicks label the nines axis.
var percentileTicks = []tick{{0, "0%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "99.999%"}}

// latencyChart draws the percentile spectrum of each latency, all in one unit
// (see displayUnit).
func latencyChart(title string, labels []string, ls []*Latency) template.HTML {
	unit, scale, ok := displayUnit(ls...)
	c := chart{title: title, xLabel: "percentile", xTicks: percentileTicks, yLabel: "latency (" + unit + ")"}
	for i, l := range ls {
		if l == nil {
			continue
		}
		f := 1.0
		if ok {
			f = scale[i]
		}
		ln := line{label: labels[i]}
		for _, p := range l.Percentiles {
			if x := percentileX(p.P); finite(x) {
				ln.x = append(ln.x, x)
				ln.y = append(ln.y, p.Value*f)
			}
		}
		c.lines = append(c.lines, ln)
	}
	return c.render()
}

// bucketChart draws a latency histogram as bars, labelled in the unit of the
// page's latency table.
func bucketChart(l *Latency) template.HTML {
	unit, scale, ok := displayUnit(l)
	f := 1.0
	if ok {
		f = scale[0]
	}
	c := chart{title: "Latency histogram", xLabel: "latency ≤ (" + unit + ")", yLabel: "count", bars: true}
	ln := line{}
	for i, b := range l.Buckets {
		ln.x = append(ln.x, float64(i))
		ln.y = append(ln.y, float64(b.Count))
		c.xTicks = append(c.xTicks, tick{at: float64(i), label: fmtNum(b.Le * f)})
	}
	c.lines = []line{ln}
	return c.render()
}

// seriesChart draws one named series from each report, shading spans.
func seriesChart(title, unit string, labels []string, ss []Series, spans []Span) template.HTML {
	c := chart{title: title, xLabel: "seconds since start", yLabel: displayUnitName(unit), spans: spans}
	for i, s := range ss {
		c.lines = append(c.lines, line{label: labels[i], x: s.T, y: s.V})
	}
	if len(ss) == 1 {
		c.lines[0].label = ""
	}
	return c.render()
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// fmtNum formats v compactly: 1234567 → 1.23M, 0.5 → 0.5.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return trimNum(v/1e9) + "G"
	case a >= 1e6:
		return trimNum(v/1e6) + "M"
	case a >= 1e4:
		return trimNum(v/1e3) + "k"
	case a == math.Trunc(a):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}

func trimNum(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func fmtInt(v int64) string { return strconv.FormatInt(v, 10) }
