// Command shardhub is the WebSocket fan-out server, its load generator and its
// benchmark tools in one binary:
//
//	shardhub serve     run the server (single node by default; --redis for a cluster)
//	shardhub loadtest  hammer any WebSocket server and write a report
//	shardhub bench     run the engine benchmarks (virtual connections)
//	shardhub compare   compare benchmark and load-test reports
//	shardhub version   print the version
//
// Run `shardhub <command> -h` for a command's flags.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"sort"
)

// command is one subcommand. Each lives in its own file and registers itself.
type command struct {
	summary string
	run     func(args []string) int // returns the exit code
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string) int) {
	commands[name] = command{summary: summary, run: run}
}

func init() {
	register("version", "print the version", func([]string) int {
		fmt.Println("shardhub", version())
		return 0
	})
}

// version returns the module version and VCS revision baked into the binary.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += "+dirty"
		}
	}
	return v + " " + info.GoVersion
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: shardhub <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'shardhub <command> -h' for the flags of a command.")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "shardhub: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	os.Exit(cmd.run(os.Args[2:]))
}
