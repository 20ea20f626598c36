// Command shardhub is the WebSocket fan-out server, its load generator and its
// benchmark tools in one binary:
//
//	shardhub serve     run the server (single node by default; --redis for a cluster)
//	shardhub loadtest  hammer any WebSocket server and write a report
//	shardhub bench     run the engine benchmarks
//	shardhub compare   compare benchmark and load-test reports
//	shardhub version   print the version (also: shardhub --version)
//
// Run `shardhub <command> -h` for a command's flags. Every command exits 0 on
// success and after -h, and 2 on a usage error; each documents its other codes.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/shardhub/shardhub/loadtest/report"
)

// command is one subcommand. Each lives in its own file and registers itself.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int // returns the exit code
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) int) {
	commands[name] = command{summary: summary, run: run}
}

func init() {
	register("version", "print the version", runVersion)
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	if _, code, done := parseFlags(fs, args, "usage: shardhub version\n\nPrints the version, the commit the binary was built from, and the Go version.", stdout, false); done {
		return code
	}
	fmt.Fprintln(stdout, "shardhub", version())
	return 0
}

// version is the module version, the commit the binary was built from (from
// the build info, or linked in by the Makefile; "+dirty" when the tree had
// uncommitted changes) and the Go version.
func version() string {
	v := report.CollectBuild()
	s := v.Module
	if s == "" {
		s = "(unknown)"
	}
	if v.Revision != "" {
		s += " " + v.Revision
		if v.Dirty {
			s += "+dirty"
		}
	} else {
		s += " (revision unknown: build with make build)"
	}
	return s + " " + runtime.Version()
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: shardhub <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'shardhub <command> -h' for the flags of a command, 'shardhub --version' for the version.")
}

// run is the whole program: it dispatches args (without the program name) to
// a command and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "help":
		if len(args) > 1 {
			if cmd, ok := commands[args[1]]; ok {
				return cmd.run([]string{"-h"}, stdout, stderr)
			}
		}
		usage(stdout)
		return 0
	case "-version", "--version":
		name = "version"
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "shardhub: unknown command %q\n", name)
		if strings.HasPrefix(name, "-") {
			fmt.Fprintln(stderr, "flags go after the command: shardhub <command> [flags]")
		}
		fmt.Fprintln(stderr, "run 'shardhub help' for the commands")
		return exitUsage
	}
	return cmd.run(args[1:], stdout, stderr)
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
