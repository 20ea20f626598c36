package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"regexp"
	"strings"
	"testing"
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
