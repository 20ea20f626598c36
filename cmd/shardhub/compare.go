package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/shardhub/shardhub/loadtest/report"
)

func init() {
	register("compare", "compare load-test and benchmark reports (exit 1 on regression with --threshold)", runCompare)
}

// thresholdFlag is a percentage: "5%" or "5" both mean five percent.
type thresholdFlag struct {
	set bool
	pct float64
}

func (t *thresholdFlag) String() string {
	if !t.set {
		return ""
	}
	return strconv.FormatFloat(t.pct, 'f', -1, 64) + "%"
}

func (t *thresholdFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a percentage like 5%%", s)
	}
	t.set, t.pct = true, v
	return nil
}

func runCompare(args []string) int { return compareMain(args, os.Stdout, os.Stderr) }

// compareMain is `shardhub compare` writing to stdout and stderr; it returns
// the exit code: 0 fine, 1 a regression beyond --threshold, 2 bad usage or an
// unreadable report.
func compareMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var threshold thresholdFlag
	var htmlPath, include string
	fs.Var(&threshold, "threshold", "fail (exit 1) when a metric is worse than the baseline by more than this, e.g. 5%")
	fs.StringVar(&htmlPath, "html", "", "also write an HTML comparison page to this path")
	fs.StringVar(&include, "metrics", "", "only compare metrics whose name matches this regular expression")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: shardhub compare [flags] baseline.json other.json [more.json …]

Lines up the metrics of shardhub reports (load tests and benchmarks alike) by
name, shows each against the first (the baseline) with absolute and percent
deltas, and judges every change by the metric's direction (higher or lower is
better). With --threshold it exits 1 when any metric is worse by more than the
threshold; unreadable reports exit 2.

flags:
`)
		fs.PrintDefaults()
	}
	files, ok := parseInterspersed(fs, args)
	if !ok {
		return 2
	}
	if len(files) < 2 {
		fmt.Fprintln(stderr, "shardhub compare: give at least two reports")
		fs.Usage()
		return 2
	}
	opts := report.CompareOptions{Threshold: threshold.pct}
	if include != "" {
		re, err := regexp.Compile(include)
		if err != nil {
			fmt.Fprintln(stderr, "shardhub compare: --metrics:", err)
			return 2
		}
		opts.Include = re
	}
	var reps []*report.Report
	var labels []string
	for _, path := range files {
		r, err := report.ReadFile(path)
		if err != nil {
			fmt.Fprintln(stderr, "shardhub compare:", err)
			return 2
		}
		reps = append(reps, r)
		labels = append(labels, label(path, r))
	}
	c := report.Compare(reps, labels, opts)
	if err := c.WriteText(stdout); err != nil {
		fmt.Fprintln(stderr, "shardhub compare:", err)
		return 2
	}
	if htmlPath != "" {
		if err := c.WriteHTMLFile(htmlPath); err != nil {
			fmt.Fprintln(stderr, "shardhub compare:", err)
			return 2
		}
		fmt.Fprintln(stdout, "html:", htmlPath)
	}
	if regs := c.Regressions(); threshold.set && len(regs) > 0 {
		fmt.Fprintf(stderr, "shardhub compare: %d regression(s) beyond %s:\n", len(regs), threshold.String())
		for _, r := range regs {
			fmt.Fprintln(stderr, "  "+r)
		}
		return 1
	}
	return 0
}

// label names a report in the table: its file name without directory and
// extension, which users pick to mean something ("before", "after").
func label(path string, r *report.Report) string {
	base := path
	if i := strings.LastIndexAny(base, `/\`); i >= 0 {
		base = base[i+1:]
	}
	base = strings.TrimSuffix(base, ".json")
	if base == "" {
		return r.Name
	}
	return base
}

// parseInterspersed parses flags that may appear before or after the
// positional arguments (`compare a.json b.json --threshold 5%`).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, true
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
