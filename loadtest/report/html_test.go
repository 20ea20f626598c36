package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// checkSelfContained fails unless page is well-formed markup that loads
// nothing: no src/href/action to another document, no CSS url() or @import,
// no <script>, <link>, <iframe>, <img>.
func checkSelfContained(tb testing.TB, page string) {
	tb.Helper()
	if !strings.HasPrefix(page, "<!DOCTYPE html>") {
		tb.Error("page does not start with <!DOCTYPE html>")
	}
	dec := xml.NewDecoder(strings.NewReader(page))
	dec.Strict = true
	dec.Entity = xml.HTMLEntity
	depth, svgs := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("page is not well-formed: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch t.Name.Local {
			case "script", "link", "iframe", "img", "object", "embed", "image", "use":
				tb.Errorf("page has a <%s> element", t.Name.Local)
			case "svg":
				svgs++
			}
			for _, a := range t.Attr {
				switch strings.ToLower(a.Name.Local) {
				case "src", "href", "action", "srcset", "data":
					if v := strings.TrimSpace(a.Value); v != "" && !strings.HasPrefix(v, "#") {
						tb.Errorf("<%s %s=%q> points outside the page", t.Name.Local, a.Name.Local, v)
					}
				case "style":
					if strings.Contains(a.Value, "url(") {
						tb.Errorf("inline style loads a URL: %q", a.Value)
					}
				}
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth > 0 && (strings.Contains(string(t), "@import") || regexp.MustCompile(`url\(\s*['"]?[a-z]+:`).Match(t)) {
				tb.Errorf("CSS loads an external resource: %.80q", string(t))
			}
		}
	}
	if depth != 0 {
		tb.Errorf("unbalanced elements: depth %d at the end", depth)
	}
	if svgs == 0 {
		tb.Error("page has no inline SVG chart")
	}
}

func TestHTMLSelfContained(t *testing.T) {
	t.Parallel()
	r := sample(t, `quotes "and" <tags> & http://example.com/x`,
		Metric{Name: "deliveries_per_sec", Value: 1e6, Unit: "msg/s", Better: HigherIsBetter, Help: "<b>not bold</b>"})
	r.Env.Args = []string{"shardhub", "loadtest", "--api", "http://127.0.0.1:8080"}
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	checkSelfContained(t, page)
	for _, want := range []string{"Latency by percentile", "deliveries_per_sec", "Latency histogram", "&lt;b&gt;not bold&lt;/b&gt;", "connect_timeout", "shardhub_dropped_broadcasts_total"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "<b>not bold</b>") {
		t.Error("metric help was not escaped")
	}
}

func TestHTMLEmptyReport(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := New(KindBench, "empty").WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "</html>") {
		t.Error("page incomplete")
	}
}

func TestComparisonHTMLSelfContained(t *testing.T) {
	t.Parallel()
	a := sample(t, "a", Metric{Name: "x", Value: 1, Better: HigherIsBetter})
	b := sample(t, "b", Metric{Name: "x", Value: 2, Better: HigherIsBetter})
	var buf bytes.Buffer
	if err := Compare([]*Report{a, b}, nil, CompareOptions{Threshold: 5}).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	checkSelfContained(t, buf.String())
	if !strings.Contains(buf.String(), "100.0%") || !strings.Contains(buf.String(), "better") {
		t.Error("comparison page lacks the delta")
	}
}

// TestHTMLReadsWell: the verdict comes first, latencies share one unit per
// table, the command can be pasted back, charts span the page and shade the
// measured phase.
func TestHTMLReadsWell(t *testing.T) {
	t.Parallel()
	r := New(KindLoadtest, "units")
	h := hdrhistogram.New(1, 60e6, 3)
	for v := int64(40_000); v <= 60_000; v += 10 {
		_ = h.RecordValue(v)
	}
	r.Latency = LatencyFromHistogram(h, "us")
	r.AddMetric("latency_p50_us", 49311, "us", LowerIsBetter)
	r.AddSeries("deliveries_per_sec", "msg/s", []float64{1, 2, 3, 4}, []float64{10, 20, 20, 20})
	r.Phases = []Span{{Name: "measure", Start: 1.5, End: 3.5}}
	r.Outcome = &Outcome{Pass: false, Summary: "FAIL: deliveries failed their limits", Failures: []string{"3 of 10 expected deliveries lost"}}
	r.Env.Args = []string{"./shardhub", "loadtest", "--ready-match", `"type":"welcome"`}
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	checkSelfContained(t, page)
	if v, m := strings.Index(page, "FAIL: deliveries"), strings.Index(page, "<h2>"); v < 0 || v > m {
		t.Error("the verdict is not above the first section")
	}
	lat := page[strings.Index(page, "<h2>Latency"):]
	lat = lat[:strings.Index(lat, "</table>")]
	if !strings.Contains(lat, "Latency (ms)") || !strings.Contains(lat, "<td class=\"n\">50.02</td>") || !strings.Contains(lat, "max 60.03 ms") {
		t.Errorf("latency section not in ms with two decimals:\n%s", lat)
	}
	if regexp.MustCompile(`\d(k|M) `).MatchString(lat) || strings.Contains(lat, "40,000") {
		t.Errorf("latency section mixes units:\n%s", lat)
	}
	if !strings.Contains(page, `<td class="n">49,311</td><td>µs</td>`) {
		t.Error("metrics table does not show the latency metric in full, in µs")
	}
	if !strings.Contains(page, `./shardhub loadtest --ready-match &#39;&#34;type&#34;:&#34;welcome&#34;&#39;`) {
		t.Errorf("the command is not shell-quoted: %s", page[strings.Index(page, "<code>"):strings.Index(page, "</code>")])
	}
	if regexp.MustCompile(`<svg[^>]* width="\d`).MatchString(page) || !strings.Contains(page, "svg.chart{display:block;margin:8px 0;background:#fff;width:100%") {
		t.Error("charts have a fixed width")
	}
	if !strings.Contains(page, `class="phase"><title>measure</title>`) {
		t.Error("the measured phase is not shaded")
	}
}
