package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/loadtest"
)

// runCLI runs the program with args and returns its exit code and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// TestEveryCommandFollowsTheConventions: the same rules for every command.
func TestEveryCommandFollowsTheConventions(t *testing.T) {
	t.Parallel()
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"bench", "compare", "loadtest", "serve", "version"}; !slices.Equal(names, want) {
		t.Fatalf("commands %v, want %v: add the new one's checks here", names, want)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, h := range []string{"-h", "--help", "-help"} {
				code, out, errOut := runCLI(name, h)
				if code != 0 || !strings.HasPrefix(out, "usage: shardhub "+name) || !strings.Contains(out, "\nflags:\n") || errOut != "" {
					t.Errorf("%s %s: exit %d, stdout %.60q, stderr %q; want exit 0 and the usage on stdout", name, h, code, out, errOut)
				}
			}
			code, out, errOut := runCLI(name, "--no-such-flag")
			if code != 2 || out != "" || strings.Count(errOut, "\n") > 3 || !strings.Contains(errOut, "run 'shardhub "+name+" -h' for the flags") {
				t.Errorf("mistyped flag: exit %d, stderr:\n%s", code, errOut)
			}
			if name == "compare" { // takes files: a stray word is a file name
				return
			}
			code, _, errOut = runCLI(name, "stray", "--h")
			if code != 2 || !strings.Contains(errOut, `unexpected argument "stray"`) || strings.Count(errOut, "\n") > 3 {
				t.Errorf("stray argument: exit %d, stderr:\n%s", code, errOut)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		code int
		want []string // in stderr
		not  []string
	}{
		{"engine field named as its flag", []string{"serve", "--shards", "-1"}, 2,
			[]string{"shardhub serve: --shards: -1 is outside 1.."}, []string{"Shards", "invalid config"}},
		{"a rule between two flags", []string{"serve", "--ping-interval", "10s", "--pong-wait", "5s"}, 2,
			[]string{"--pong-wait: 5s must exceed --ping-interval (10s)"}, []string{"PingInterval"}},
		{"duration without a unit", []string{"serve", "--ping-interval", "5"}, 2,
			[]string{`invalid value "5" for flag --ping-interval: want a duration with a unit, e.g. 5s, 250ms or 1m30s`}, []string{"parse error"}},
		{"number that is not one", []string{"serve", "--shards", "four"}, 2,
			[]string{"want a whole number"}, []string{"parse error"}},
		{"typo gets a suggestion", []string{"serve", "--adr", ":9000"}, 2,
			[]string{"flag provided but not defined: --adr", "did you mean --addr?"}, []string{"-max-conns"}},
		{"stray word before flags", []string{"serve", "start", "--addr", ":9000"}, 2,
			[]string{`unexpected argument "start"`}, nil},
		{"bench needs a mode", []string{"bench"}, 2, []string{"choose exactly one of --virtual and --real"}, nil},
		{"bench negative size", []string{"bench", "--virtual", "--conns", "-5"}, 2, []string{"--conns: -5 must be positive"}, nil},
		{"bad percentage", []string{"loadtest", "--max-loss", "lots"}, 2, []string{"want a percentage, e.g. 5%"}, nil},
		{"unknown command", []string{"serv"}, 2, []string{`unknown command "serv"`, "run 'shardhub help'"}, nil},
		{"no command", nil, 2, []string{"usage: shardhub <command>"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := runCLI(tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s", code, tt.code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(errOut, n) {
					t.Errorf("stderr has %q:\n%s", n, errOut)
				}
			}
			if strings.Count(errOut, "shardhub serve:") > 1 || strings.Contains(errOut, "shardhub: invalid") {
				t.Errorf("stderr repeats the program name:\n%s", errOut)
			}
		})
	}
}

// TestEnvDurationError: a duration from the environment is judged like one
// from a flag.
func TestEnvDurationError(t *testing.T) {
	t.Setenv("SHARDHUB_PING_INTERVAL", "5")
	code, _, errOut := runCLI("serve")
	if code != 2 || !strings.Contains(errOut, `SHARDHUB_PING_INTERVAL="5": want a duration with a unit`) {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		code, out, _ := runCLI(args...)
		if code != 0 || !strings.HasPrefix(out, "shardhub ") || !strings.Contains(out, "go1.") {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
	if code, out, _ := runCLI("help"); code != 0 || !strings.Contains(out, "loadtest") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
	if code, out, _ := runCLI("help", "compare"); code != 0 || !strings.HasPrefix(out, "usage: shardhub compare") {
		t.Errorf("help compare: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI("version", "extra"); code != 2 {
		t.Errorf("version extra: exit %d, want 2", code)
	}
}

// TestFieldFlags: a field maps to the flag whose value points at it.
func TestFieldFlags(t *testing.T) {
	t.Parallel()
	var cfg engine.Config
	var other int
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.IntVar(&cfg.Shards, "shards", 0, "")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", 0, "")
	fs.IntVar(&other, "other", 0, "")
	friendlyValues(fs) // wrapped values still map
	got := fieldFlags(fs, &cfg)
	if len(got) != 2 || got["Shards"] != "shards" || got["PingInterval"] != "ping-interval" {
		t.Errorf("fieldFlags = %v", got)
	}
}

// The built binary, shared by the tests that run it. It links a made-up
// commit the way the Makefile links the real one.
const linkedTestRevision = "0123456789abcdef0123456789abcdef01234567"

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

// shardhubBinary builds the shardhub binary once and returns its path.
func shardhubBinary(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("builds the binary")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shardhub-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "shardhub")
		cmd := exec.Command("go", "build", "-buildvcs=false", "-o", binPath,
			"-ldflags", "-X github.com/shardhub/shardhub/loadtest/report.linkedRevision="+linkedTestRevision, ".")
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		tb.Fatalf("go build: %v\n%s", binErr, binOut)
	}
	return binPath
}

// TestVersionOutsideTheRepository: the binary knows its commit wherever it
// runs, without asking git.
func TestVersionOutsideTheRepository(t *testing.T) {
	t.Parallel()
	bin := shardhubBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "--version")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), linkedTestRevision) {
		t.Errorf("shardhub --version in %s: %v, %q; want the linked revision", dir, err, out)
	}
	// A report written there records it too.
	url := testServer(t)
	rep := filepath.Join(dir, "r.json")
	cmd = exec.Command(bin, "loadtest", "--url", url, "--conns", "2", "--scenario", "connect", "--duration", "100ms",
		"--settle", "10ms", "--out", rep, "--no-html", "--quiet")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, err := os.ReadFile(rep)
	if err != nil || !bytes.Contains(b, []byte(`"git_revision": "`+linkedTestRevision+`"`)) || !bytes.Contains(b, []byte(`"duration": "100ms"`)) {
		t.Errorf("report lacks the revision or a readable duration: %v\n%.600s", err, b)
	}
}

// TestProgressLineFits: every phase's line fits 80 columns at the largest
// numbers a run shows.
func TestProgressLineFits(t *testing.T) {
	t.Parallel()
	big := loadtestProgress(999_999_999)
	for _, phase := range []string{"connect", "ready", "measure", "drain", "done"} {
		big.Phase = phase
		line := progressLine(big)
		if n := len([]rune(line)); n > 80 {
			t.Errorf("%s: %d columns: %s", phase, n, line)
		}
	}
	small := loadtestProgress(3)
	small.Phase = "measure"
	if line := progressLine(small); !strings.Contains(line, "err 3") {
		t.Errorf("line %q", line)
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1k", 1234: "1.23k", 12345: "12.3k", 99960: "100k", 999_499: "999k", 999_500: "1M", 30_000_000: "30M", 5_000_000_000: "5G"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

func loadtestProgress(n int64) loadtest.Progress {
	return loadtest.Progress{Elapsed: time.Duration(n) * time.Millisecond, Target: int(n), Open: n, Ready: n, Failed: n,
		Dropped: n, Published: n, PublishFailed: n, Deliveries: n, DeliveriesPerSec: float64(n),
		P50: time.Duration(n) * time.Millisecond, P99: time.Duration(n) * time.Millisecond, Errors: n, CPU: 16}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
