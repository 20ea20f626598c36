package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/shardhub/shardhub/bench"
	"github.com/shardhub/shardhub/loadtest/report"
)

func init() {
	register("bench", "benchmark the engine: --virtual (in-memory connections) or --real (loopback sockets)", runBench)
}

func runBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	virtual := fs.Bool("virtual", false, "virtual (in-memory) connections: measures the engine alone")
	real := fs.Bool("real", false, "real loopback sockets: shardhub vs the raw write ceiling vs a naive hub, in one run")
	var vo bench.VirtualOptions
	fs.IntVar(&vo.Conns, "conns", 1_000_000, "connections")
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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: shardhub bench --virtual [--conns 1000000] | --real [--conns 19000]\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *virtual == *real {
		fmt.Fprintln(os.Stderr, "shardhub bench: choose exactly one of --virtual and --real")
		fs.Usage()
		return 2
	}
	progress := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...) }
	var rep *report.Report
	if *virtual {
		vo.Progress = progress
		res, err := bench.RunVirtual(vo)
		if err != nil {
			fmt.Fprintln(os.Stderr, "shardhub bench:", err)
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
			fmt.Fprintln(os.Stderr, "shardhub bench:", err)
			return 1
		}
		if *name == "" {
			*name = fmt.Sprintf("real-%d", ro.Conns)
		}
		rep = res.Report(*name, ro)
	}
	printMetrics(rep)
	if *jsonOut != "" {
		if err := rep.WriteFile(*jsonOut); err != nil {
			fmt.Fprintln(os.Stderr, "shardhub bench:", err)
			return 1
		}
	}
	if *htmlOut != "" {
		if err := rep.WriteHTMLFile(*htmlOut); err != nil {
			fmt.Fprintln(os.Stderr, "shardhub bench:", err)
			return 1
		}
	}
	return 0
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func printMetrics(r *report.Report) {
	fmt.Printf("%s (%s, %d cores, GOMAXPROCS %d, %s)\n", r.Name, r.Env.CPUModel, r.Env.Cores, r.Env.GOMAXPROCS, r.Env.GoVersion)
	for _, m := range r.Metrics {
		fmt.Printf("  %-34s %14.2f %s\n", m.Name, m.Value, m.Unit)
	}
	for _, n := range r.Notes {
		fmt.Printf("  note: %s\n", n)
	}
}
