package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/shardhub/shardhub/bench"
	"github.com/shardhub/shardhub/loadtest/report"
)

func init() {
	register("bench", "benchmark the engine: --virtual (in-memory connections) or --real (loopback sockets)", runBench)
}

const benchUsage = `usage: shardhub bench --virtual [--conns 1000000] | --real [--conns 19000]

--virtual registers in-memory connections in one engine and times broadcasts
that reach all of them. --real serves loopback sockets and runs shardhub, the
raw write() ceiling and a naive hub on the same sockets (docs/benchmarks.md).

Exit codes: 0 done; 1 the benchmark failed; 2 bad usage; 3 shardhub or the
raw ceiling lost deliveries (--real).`

// exitBenchLoss is bench --real's exit code when a phase that must deliver
// everything did not.
const exitBenchLoss = 3

func runBench(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench", stderr)
	virtual := fs.Bool("virtual", false, "virtual (in-memory) connections: measures the engine alone")
	real := fs.Bool("real", false, "real loopback sockets: shardhub vs the raw write ceiling vs a naive hub, in one run")
	var vo bench.VirtualOptions
	fs.IntVar(&vo.Conns, "conns", 1_000_000, "connections (--real: default 19000)")
	fs.IntVar(&vo.Shards, "shards", 0, "engine shards (0 = GOMAXPROCS)")
	fs.IntVar(&vo.Broadcasts, "broadcasts", 50, "single broadcasts to time (--virtual)")
	fs.IntVar(&vo.Burst, "burst", 100, "broadcasts sent back to back in the burst phase (--virtual)")
	fs.IntVar(&vo.Payload, "payload", 64, "payload bytes")
	var ro bench.RealOptions
	fs.IntVar(&ro.Rate, "rate", 100, "broadcasts per second offered in each phase (--real)")
	fs.DurationVar(&ro.Duration, "duration", 5*time.Second, "length of each measured phase (--real)")
	fs.IntVar(&ro.Workers, "workers", 0, "client worker processes (--real; 0 = one per 9,500 connections)")
	fs.StringVar(&ro.CPUProfile, "cpuprofile", "", "write a CPU profile of the server during the shardhub phase (--real)")
	fs.StringVar(&ro.MemProfile, "memprofile", "", "write a heap profile of the server with every connection idle (--real)")
	fs.StringVar(&ro.SourceIPs, "source-ips", "127.0.0.2-127.0.0.9", "client source addresses (--real)")
	name := fs.String("name", "", "report name (default from the mode and size)")
	jsonOut := fs.String("json", "", "write the report as JSON to this file")
	htmlOut := fs.String("html", "", "write the report as a self-contained HTML page to this file")
	if _, code, done := parseFlags(fs, args, benchUsage, stdout, false); done {
		return code
	}
	if *virtual == *real {
		fmt.Fprintln(stderr, "shardhub bench: choose exactly one of --virtual and --real")
		usageHint(fs)
		return exitUsage
	}
	for _, c := range []struct {
		flag string
		v    int
	}{{"conns", vo.Conns}, {"broadcasts", vo.Broadcasts}, {"burst", vo.Burst}, {"payload", vo.Payload}, {"rate", ro.Rate}} {
		if c.v <= 0 {
			fmt.Fprintf(stderr, "shardhub bench: --%s: %d must be positive\n", c.flag, c.v)
			return exitUsage
		}
	}
	switch {
	case vo.Shards < 0:
		fmt.Fprintf(stderr, "shardhub bench: --shards: %d is negative (0 = GOMAXPROCS)\n", vo.Shards)
		return exitUsage
	case ro.Workers < 0:
		fmt.Fprintf(stderr, "shardhub bench: --workers: %d is negative (0 = one per 9,500 connections)\n", ro.Workers)
		return exitUsage
	case ro.Duration <= 0:
		fmt.Fprintf(stderr, "shardhub bench: --duration: %s must be positive\n", ro.Duration)
		return exitUsage
	}
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }
	var rep *report.Report
	code := 0
	if *virtual {
		vo.Progress = progress
		res, err := bench.RunVirtual(vo)
		if err != nil {
			fmt.Fprintln(stderr, "shardhub bench:", err)
			return 1
		}
		if *name == "" {
			*name = fmt.Sprintf("virtual-%d", vo.Conns)
		}
		rep = res.Report(*name, vo)
	} else {
		ro.Conns, ro.Shards, ro.Payload, ro.Progress = vo.Conns, vo.Shards, vo.Payload, progress
		if !flagSet(fs, "conns") {
			ro.Conns = 19_000
		}
		res, err := bench.RunReal(ro)
		if err != nil {
			fmt.Fprintln(stderr, "shardhub bench:", err)
			return 1
		}
		if *name == "" {
			*name = fmt.Sprintf("real-%d", ro.Conns)
		}
		rep = res.Report(*name, ro)
		if rep.Outcome != nil && !rep.Outcome.Pass {
			code = exitBenchLoss
		}
	}
	printMetrics(stdout, rep)
	if *jsonOut != "" {
		if err := rep.WriteFile(*jsonOut); err != nil {
			fmt.Fprintln(stderr, "shardhub bench:", err)
			return 1
		}
	}
	if *htmlOut != "" {
		if err := rep.WriteHTMLFile(*htmlOut); err != nil {
			fmt.Fprintln(stderr, "shardhub bench:", err)
			return 1
		}
	}
	return code
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// printMetrics prints the verdict (when there is one), then the metrics.
func printMetrics(w io.Writer, r *report.Report) {
	if o := r.Outcome; o != nil {
		fmt.Fprintln(w, o.Summary)
		for _, f := range o.Failures {
			fmt.Fprintln(w, "  -", f)
		}
	}
	fmt.Fprintf(w, "%s (%s, %d cores, GOMAXPROCS %d, %s)\n", r.Name, r.Env.CPUModel, r.Env.Cores, r.Env.GOMAXPROCS, r.Env.GoVersion)
	for _, m := range r.Metrics {
		fmt.Fprintf(w, "  %-34s %16s %s\n", m.Name, report.FormatValue(m.Value), displayUnit(m.Unit))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}
