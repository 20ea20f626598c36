package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/shardhub/shardhub/loadtest"
	"github.com/shardhub/shardhub/loadtest/report"
)

func init() {
	register("loadtest", "load any WebSocket server and write JSON + HTML reports", runLoadtest)
}

// listFlag is a repeatable, comma-separated string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// loadtestFlags holds `shardhub loadtest` settings.
type loadtestFlags struct {
	cfg                 loadtest.Config
	scenario, sourceIPs string
	urls, apis, pids    listFlag
	out, html, name     string
	noHTML, quiet       bool
	progressEvery       time.Duration
	maxConnFail         percentFlag
	maxPubFail          percentFlag
	maxLoss             percentFlag
}

// limits are the run's pass limits: loadtest.DefaultLimits, as the flags
// change them.
func (f *loadtestFlags) limits() loadtest.Limits {
	l := loadtest.DefaultLimits
	if f.maxConnFail.set {
		l.ConnFailuresPct = f.maxConnFail.pct
	}
	if f.maxPubFail.set {
		l.PublishFailuresPct = f.maxPubFail.pct
	}
	if f.maxLoss.set {
		l.LossPct = f.maxLoss.pct
	}
	return l
}

func (f *loadtestFlags) define(fs *flag.FlagSet) {
	c := &f.cfg
	fs.StringVar(&f.scenario, "scenario", "broadcast", "broadcast, channels, connect or idle")
	fs.Var(&f.urls, "url", "WebSocket URL to load; repeat or comma-separate for several instances (connections round-robin)")
	fs.IntVar(&c.Conns, "conns", loadtest.DefaultConns, "connections to open")
	fs.Float64Var(&c.RampRate, "ramp", loadtest.DefaultRampRate, "connections opened per second, all workers together (negative: unlimited)")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", loadtest.DefaultDialConcurrency, "handshakes in flight per process")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", loadtest.DefaultConnectTimeout, "bound on one dial plus handshake")
	fs.StringVar(&f.sourceIPs, "source-ips", "", "local addresses to dial from, e.g. 127.0.0.2-127.0.0.60 (each gives ~28K ports per server address)")
	fs.IntVar(&c.Workers, "workers", 1, "worker processes holding the connections (each holds conns/workers; ~19,000 max per process here)")
	fs.StringVar(&c.IO, "io", loadtest.DefaultIO, "how each process reads its connections: epoll (a few loops, no goroutine or buffer per idle connection; Linux) or goroutine (one goroutine and read buffer each)")
	fs.DurationVar(&c.Duration, "duration", loadtest.DefaultDuration, "length of the measured phase (publishing or holding)")
	fs.DurationVar(&c.Settle, "settle", loadtest.DefaultSettle, "pause between all connections ready and the measured phase")
	fs.DurationVar(&c.Drain, "drain", loadtest.DefaultDrain, "longest wait for deliveries after the last publish")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", loadtest.DefaultReadyTimeout, "longest wait for subscriptions to be acknowledged")
	fs.DurationVar(&c.RampTimeout, "ramp-timeout", 0, "longest connection phase (0: ramp length + connect timeout + 30s)")
	fs.Float64Var(&c.Rate, "rate", loadtest.DefaultRate, "messages per second published to each target")
	fs.IntVar(&c.Size, "size", loadtest.DefaultSize, "payload bytes")
	fs.StringVar(&c.Publish, "publish", loadtest.PublishHTTP, "http (the server's /api/broadcast and /api/publish) or ws (a publisher connection per target)")
	fs.StringVar(&c.PublishTo, "publish-to", loadtest.PublishEach, "each (every instance, conns expect their own) or first (instances share a broker)")
	fs.Var(&f.apis, "api", "HTTP API base per URL, or one for all (default: derived from --url)")
	fs.StringVar(&c.APIToken, "api-token", "", "bearer token for the HTTP API")
	fs.StringVar(&c.Token, "token", "", "bearer token sent on every WebSocket upgrade")
	fs.StringVar(&c.PublishTemplate, "publish-template", "", "message a publisher connection sends; {{payload}} and {{channel}} are replaced")
	fs.StringVar(&c.SubscribeTemplate, "subscribe-template", "", "message each connection sends per channel it joins; {{channel}} is replaced")
	fs.StringVar(&c.ReadyMatch, "ready-match", "", `text of the frame that makes a connection ready (shardhub: '"type":"welcome"' for broadcast; channels default '"type":"subscribed"'; "-" = ready at handshake)`)
	fs.IntVar(&c.Channels, "channels", loadtest.DefaultChannels, "channels (channels scenario)")
	fs.IntVar(&c.SubsPerConn, "subs-per-conn", 1, "channels each connection joins (channels scenario)")
	fs.BoolVar(&c.Zipf, "zipf", false, "choose channels by a zipf distribution instead of uniformly")
	fs.Float64Var(&c.ZipfS, "zipf-s", loadtest.DefaultZipfS, "zipf exponent (> 1)")
	fs.StringVar(&c.ChannelPrefix, "channel-prefix", loadtest.DefaultChannelPrefix, "channel names are prefix + number")
	fs.StringVar(&c.MetricsPath, "metrics-path", "/metrics", `Prometheus metrics path scraped before and after ("-" disables)`)
	fs.StringVar(&c.StatsPath, "stats-path", "/api/stats", `server stats path with a "memory" object ("-" disables)`)
	fs.Var(&f.pids, "server-pid", "server process whose RSS and CPU to read from /proc (repeatable); when given, the server CPU figures cover exactly these processes (use it for instances sharing a port)")
	fs.DurationVar(&c.Interval, "interval", loadtest.DefaultInterval, "sampling period of the time series and progress")
	fs.DurationVar(&c.HTTPTimeout, "http-timeout", loadtest.DefaultHTTPTimeout, "bound on each HTTP request")
	fs.IntVar(&c.ReadBufferSize, "read-buffer", loadtest.DefaultReadBufferSize, "per-connection read buffer in bytes (--io goroutine; with epoll the handshake's)")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the channel choices")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow targets that are not loopback addresses (off: only 127.0.0.0/8 and ::1)")
	fs.StringVar(&f.name, "name", "", "report name (default: scenario-Nconns)")
	fs.StringVar(&f.out, "out", "", "JSON report path (default: loadtest-<scenario>-<time>.json)")
	fs.StringVar(&f.html, "html", "", "HTML report path (default: the JSON path with .html)")
	fs.BoolVar(&f.noHTML, "no-html", false, "do not write the HTML report")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	fs.DurationVar(&f.progressEvery, "progress-every", 0, "when stderr is not a terminal, print a progress line this often (0: every interval)")
	d := loadtest.DefaultLimits
	fs.Var(&f.maxConnFail, "max-conn-failures", fmt.Sprintf("fail the run (exit %d) when more connections than this failed to open, were not ready, or dropped (default %g%%)", exitConnFailures, d.ConnFailuresPct))
	fs.Var(&f.maxPubFail, "max-publish-failures", fmt.Sprintf("fail the run (exit %d) when more publishes than this failed, e.g. HTTP answers other than 2xx (default %g%%)", exitPublishFailures, d.PublishFailuresPct))
	fs.Var(&f.maxLoss, "max-loss", fmt.Sprintf("fail the run (exit %d) when more expected deliveries than this were lost (default %g%%)", exitLoss, d.LossPct))
}

// Exit codes of `shardhub loadtest` (docs/loadtest.md). When several checks
// fail, the code is the first of them in this order.
const (
	exitFailed          = 1   // the run could not be carried out, or its reports not written
	exitConnFailures    = 3   // connections failed past --max-conn-failures
	exitPublishFailures = 4   // publishes failed past --max-publish-failures
	exitLoss            = 5   // deliveries lost past --max-loss
	exitInterrupted     = 130 // stopped by Ctrl-C or SIGTERM; the reports are written
)

// checkExit maps a failed check to its exit code.
var checkExit = map[string]int{
	loadtest.CheckConnections: exitConnFailures,
	loadtest.CheckPublishes:   exitPublishFailures,
	loadtest.CheckDeliveries:  exitLoss,
}

const loadtestUsage = `usage: shardhub loadtest --url ws://127.0.0.1:8080/ws [flags]

Opens --conns connections, runs the scenario, and writes a JSON report (schema
shardhub.report/v1) and a self-contained HTML report. Only loopback targets are
allowed unless --allow-remote. Ctrl-C stops early and still writes the reports.
See docs/loadtest.md.

Exit codes: 0 passed; 1 the run could not be carried out; 2 bad usage or a
refused target; 3 connections, 4 publishes failed past their limit; 5
deliveries lost past --max-loss; 130 interrupted (the reports are written).`

func runLoadtest(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--worker" || args[0] == "-worker") {
		return runLoadtestWorker(stderr)
	}
	return loadtestMain(args, stdout, stderr)
}

// loadtestMain is `shardhub loadtest` writing its summary to stdout and
// progress and errors to stderr. It returns the exit code (loadtestUsage).
func loadtestMain(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("loadtest", stderr)
	var f loadtestFlags
	f.define(fs)
	if _, code, done := parseFlags(fs, args, loadtestUsage, stdout, false); done {
		return code
	}
	cfg := f.cfg
	cfg.Scenario = loadtest.Scenario(f.scenario)
	cfg.URLs = f.urls
	cfg.APIs = f.apis
	if f.sourceIPs != "" {
		ips, err := loadtest.ParseSourceIPs(f.sourceIPs)
		if err != nil {
			fmt.Fprintln(stderr, "shardhub loadtest:", err)
			return 2
		}
		cfg.SourceIPs = ips
	}
	for _, p := range f.pids {
		pid, err := strconv.Atoi(p)
		if err != nil {
			fmt.Fprintf(stderr, "shardhub loadtest: --server-pid %q: not a number\n", p)
			return 2
		}
		cfg.ServerPIDs = append(cfg.ServerPIDs, pid)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "shardhub loadtest:", loadtestConfigError(fs, &f, err))
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Logger = log
	if f.out == "" {
		f.out = fmt.Sprintf("loadtest-%s-%s.json", cfg.Scenario, time.Now().Format("20060102-150405"))
	}
	if f.html == "" && !f.noHTML {
		f.html = strings.TrimSuffix(f.out, filepath.Ext(f.out)) + ".html"
	}
	pr := newProgressPrinter(stderr, f.quiet, f.progressEvery)
	cfg.OnProgress = pr.print

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()
	res, err := loadtest.Run(ctx, cfg)
	pr.done()
	if err != nil {
		fmt.Fprintln(stderr, "shardhub loadtest:", loadtestConfigError(fs, &f, err))
		if errors.Is(err, loadtest.ErrInvalidConfig) || errors.Is(err, loadtest.ErrRemoteTarget) || errors.Is(err, loadtest.ErrTooManyConns) {
			return exitUsage
		}
		return exitFailed
	}
	rep := res.Report(f.name)
	rep.Outcome = res.Outcome(f.limits())
	if err := rep.WriteFile(f.out); err != nil {
		fmt.Fprintln(stderr, "shardhub loadtest:", err)
		return exitFailed
	}
	if f.html != "" && !f.noHTML {
		if err := rep.WriteHTMLFile(f.html); err != nil {
			fmt.Fprintln(stderr, "shardhub loadtest:", err)
			return exitFailed
		}
	}
	printSummary(stdout, rep)
	fmt.Fprintf(stdout, "\nreport: %s", f.out)
	if f.html != "" && !f.noHTML {
		fmt.Fprintf(stdout, "  html: %s", f.html)
	}
	fmt.Fprintln(stdout)
	if res.Interrupted {
		return exitInterrupted
	}
	if fails := res.Check(f.limits()); len(fails) > 0 {
		for _, fl := range fails {
			fmt.Fprintln(stderr, "shardhub loadtest: FAIL:", fl.Detail)
		}
		return checkExit[fails[0].Check]
	}
	return 0
}

// loadtestConfigError names the flags behind a loadtest.Config error.
func loadtestConfigError(fs *flag.FlagSet, f *loadtestFlags, err error) error {
	return configError(err, loadtest.ErrInvalidConfig, fs, &f.cfg, map[string]string{
		"Scenario": "scenario", "URLs": "url", "APIs": "api", "SourceIPs": "source-ips", "ServerPIDs": "server-pid",
	})
}

// runLoadtestWorker serves as a worker process of a parent `shardhub loadtest
// --workers N`. Ctrl-C reaches the whole process group: the worker ignores it
// and stops when its parent says so, so the parent still gets its results.
func runLoadtestWorker(stderr io.Writer) int {
	signal.Ignore(os.Interrupt)
	if err := loadtest.ServeWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(stderr, "shardhub loadtest worker:", err)
		return exitFailed
	}
	return 0
}

// printSummary prints the verdict first, then the metrics, errors and notes.
func printSummary(w io.Writer, r *report.Report) {
	if o := r.Outcome; o != nil {
		fmt.Fprintln(w, o.Summary)
		for _, f := range o.Failures {
			fmt.Fprintln(w, "  -", f)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%s (%s, %s)\n", r.Name, r.Kind, time.Duration(r.DurationSeconds*float64(time.Second)).Round(time.Millisecond))
	for _, m := range r.Metrics {
		fmt.Fprintf(w, "  %-28s %14s %s\n", m.Name, report.FormatValue(m.Value), displayUnit(m.Unit))
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "errors:")
		kinds := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "  %-28s %14s\n", k, report.FormatValue(float64(r.Errors[k])))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// displayUnit shows a metric unit as people write it.
func displayUnit(u string) string {
	if u == "us" {
		return "µs"
	}
	return u
}

// progressPrinter shows loadtest.Progress. On a terminal it rewrites one line
// in place (carriage return + erase line): the status is a handful of numbers,
// not a bar with a known total, so a progress-bar library would add a render
// goroutine and dependencies for nothing the terminal does not already do;
// x/term tells a terminal from a pipe and gives its width. Elsewhere (CI logs,
// files) it prints plain lines.
type progressPrinter struct {
	w       io.Writer
	tty     bool
	quiet   bool
	every   time.Duration
	last    time.Time
	printed bool
	width   int
}

func newProgressPrinter(w io.Writer, quiet bool, every time.Duration) *progressPrinter {
	p := &progressPrinter{w: w, quiet: quiet, every: every}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 20 {
			p.width = cols - 1
		}
	}
	return p
}

func (p *progressPrinter) print(pr loadtest.Progress) {
	if p.quiet {
		return
	}
	line := progressLine(pr)
	if p.tty {
		if p.width > 0 && len([]rune(line)) > p.width {
			line = string([]rune(line)[:p.width])
		}
		fmt.Fprint(p.w, "\r\x1b[K"+line)
		p.printed = true
		return
	}
	if p.every > 0 && time.Since(p.last) < p.every && pr.Phase != loadtest.PhaseDone {
		return
	}
	p.last = time.Now()
	fmt.Fprintln(p.w, line)
}

// progressLine renders pr in at most 80 columns: while connecting, the
// connections (open of target, ready, failed dials); from the measured phase
// on, the publishing and what arrives. Errors count every failure so far,
// failed publishes included.
func progressLine(pr loadtest.Progress) string {
	head := fmt.Sprintf("%-7s %6s", pr.Phase, elapsed(pr.Elapsed))
	switch pr.Phase {
	case loadtest.PhaseConnect, loadtest.PhaseReady:
		return fmt.Sprintf("%s conns %s/%s ready %s fail %s err %s cpu %.1f", head,
			count(pr.Open), count(int64(pr.Target)), count(pr.Ready), count(pr.Failed), count(pr.Errors), pr.CPU)
	}
	return fmt.Sprintf("%s conns %s pub %s recv %s/s p99 %s err %s cpu %.1f", head,
		count(pr.Open), count(pr.Published), count(int64(pr.DeliveriesPerSec)), shortDur(pr.P99), count(pr.Errors), pr.CPU)
}

// elapsed shows d in at most 6 columns: "12.3s", "4m05s", "123m".
func elapsed(d time.Duration) string {
	switch {
	case d < 100*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < 100*time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return strconv.Itoa(int(d.Minutes())) + "m"
}

// count shows a non-negative n in at most 5 columns, to 3 significant
// digits: 999, 1.23k, 12.3k, 123k, 1.23M.
func count(n int64) string {
	if n < 1000 {
		return strconv.FormatInt(n, 10)
	}
	v, unit := float64(n)/1e3, "k"
	for _, next := range []string{"M", "G"} {
		if v < 999.5 {
			break
		}
		v, unit = v/1e3, next
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + unit
}

// done ends the rewritten line.
func (p *progressPrinter) done() {
	if p.tty && p.printed {
		fmt.Fprintln(p.w)
	}
}

// shortDur shows a latency in at most 7 columns: "850µs", "12.3ms", "1.25s".
func shortDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms"
	case d < 100*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
	}
	return strconv.Itoa(int(d.Seconds())) + "s"
}
