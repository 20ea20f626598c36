package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/shardhub/shardhub/loadtest/report"
)

func init() {
	register("compare", "compare load-test and benchmark reports (exit 1 on regression with --threshold)", runCompare)
}

const compareUsage = `usage: shardhub compare [flags] baseline.json other.json [more.json …]

Lines up the metrics of shardhub reports (load tests and benchmarks alike) by
name, shows each against the first (the baseline) with absolute and percent
deltas, and judges every change by the metric's direction (higher or lower is
better). The first line is the verdict. Reports whose workloads differ (other
scenario, connections, rate…) are flagged: their metrics measure different
things. Flags may come before or after the files.

Exit codes: 0 fine; 1 a metric is worse beyond --threshold; 2 bad usage or an
unreadable report; 3 --strict and the runs' workloads differ.`

// exitNotComparable is compare's exit code when --strict refuses reports
// whose workloads differ.
const exitNotComparable = 3

func runCompare(args []string, stdout, stderr io.Writer) int {
	return compareMain(args, stdout, stderr)
}

// compareMain is `shardhub compare` writing to stdout and stderr; it returns
// the exit code (compareUsage).
func compareMain(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("compare", stderr)
	var threshold percentFlag
	var htmlPath, include string
	var strict bool
	fs.Var(&threshold, "threshold", "fail (exit 1) when a metric is worse than the baseline by more than this, e.g. 5%")
	fs.StringVar(&htmlPath, "html", "", "also write an HTML comparison page to this path")
	fs.StringVar(&include, "metrics", "", "only compare metrics whose name matches this regular expression")
	fs.BoolVar(&strict, "strict", false, "refuse (exit 3) to judge reports whose workloads differ")
	files, code, done := parseFlags(fs, args, compareUsage, stdout, true)
	if done {
		return code
	}
	if len(files) < 2 {
		fmt.Fprintln(stderr, "shardhub compare: give at least two reports")
		usageHint(fs)
		return exitUsage
	}
	opts := report.CompareOptions{Threshold: threshold.pct}
	if include != "" {
		re, err := regexp.Compile(include)
		if err != nil {
			fmt.Fprintln(stderr, "shardhub compare: --metrics:", err)
			return exitUsage
		}
		opts.Include = re
	}
	var reps []*report.Report
	var labels []string
	for _, path := range files {
		r, err := report.ReadFile(path)
		if err != nil {
			fmt.Fprintln(stderr, "shardhub compare:", err)
			return exitUsage
		}
		reps = append(reps, r)
		labels = append(labels, label(path, r))
	}
	c := report.Compare(reps, labels, opts)
	if err := c.WriteText(stdout); err != nil {
		fmt.Fprintln(stderr, "shardhub compare:", err)
		return exitUsage
	}
	if htmlPath != "" {
		if err := c.WriteHTMLFile(htmlPath); err != nil {
			fmt.Fprintln(stderr, "shardhub compare:", err)
			return exitUsage
		}
		fmt.Fprintln(stdout, "html:", htmlPath)
	}
	if strict && !c.Comparable() {
		fmt.Fprintln(stderr, "shardhub compare: --strict: the runs' workloads differ; not judging them:")
		for _, d := range c.WorkloadDiffs {
			fmt.Fprintln(stderr, "  "+d)
		}
		return exitNotComparable
	}
	if regs := c.Regressions(); threshold.set && len(regs) > 0 {
		fmt.Fprintf(stderr, "shardhub compare: %d regression(s) beyond %s:\n", len(regs), threshold.String())
		for _, r := range regs {
			fmt.Fprintln(stderr, "  "+r)
		}
		if !c.Comparable() {
			fmt.Fprintln(stderr, "shardhub compare: warning: the runs' workloads differ, so these may not be regressions (--strict refuses such comparisons)")
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
