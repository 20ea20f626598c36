package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The conventions every subcommand shares, so that each behaves the same:
//
//   - -h and --help print the command's usage and flags on stdout and exit 0;
//   - a bad or unknown flag prints one line saying what is wrong (with the
//     closest flag name for a typo, and an example for a value of the wrong
//     kind) and one line on where the flags are listed, and exits 2;
//   - an argument that is not a flag is an error (exit 2) unless the command
//     takes positional arguments, in which case flags may come before or
//     after them;
//   - configuration errors name flags (--shards), not Go fields (Shards).

// exitUsage is the exit status of every usage error.
const exitUsage = 2

// newFlagSet returns the flag set of `shardhub name`, writing errors to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("shardhub "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args into fs under the shared conventions. header is the
// usage text printed above the flags for -h. With positional, the arguments
// that are not flags are returned (flags may come before or after them);
// without, any such argument is an error. done is true when the command must
// exit now with code: after -h (0) or a usage error (2).
func parseFlags(fs *flag.FlagSet, args []string, header string, stdout io.Writer, positional bool) (pos []string, code int, done bool) {
	stderr := fs.Output()
	friendlyValues(fs)
	fs.Usage = func() {} // parseFlags prints usage and hints itself
	for {
		var msg strings.Builder
		fs.SetOutput(&msg) // the flag package's own message, to be reworded
		err := fs.Parse(args)
		fs.SetOutput(stderr)
		fmt.Fprint(stderr, flagDashes.ReplaceAllString(msg.String(), "$1--$2"))
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, header, stdout)
			return nil, 0, true
		}
		if err != nil { // flag printed the error: add a hint, not the whole usage
			if name, ok := unknownFlag(err); ok {
				if s := closestFlag(fs, name); s != "" {
					fmt.Fprintf(stderr, "did you mean --%s?\n", s)
				}
			}
			usageHint(fs)
			return nil, exitUsage, true
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, 0, false
		}
		if !positional {
			fmt.Fprintf(stderr, "%s: unexpected argument %q (flags start with --; every flag after it would be ignored)\n", fs.Name(), args[0])
			usageHint(fs)
			return nil, exitUsage, true
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), 0, false
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// flagDashes finds the flag names in the flag package's messages ("flag
// provided but not defined: -adr"), which name them with one dash where every
// other message and the docs use two.
var flagDashes = regexp.MustCompile(`(defined: |for flag |argument: |value for )-([A-Za-z][\w-]*)`)

// usageHint tells where the flags are listed.
func usageHint(fs *flag.FlagSet) {
	fmt.Fprintf(fs.Output(), "run '%s -h' for the flags\n", fs.Name())
}

// printUsage writes header and every flag with its default to w. The flags'
// own values are shown (PrintDefaults leaves out defaults equal to a value's
// zero, which it learns from the value's type).
func printUsage(fs *flag.FlagSet, header string, w io.Writer) {
	out := fs.Output()
	fs.SetOutput(w)
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := f.Value.(friendlyValue); ok {
			f.Value = v.Value
		}
	})
	defer func() {
		fs.SetOutput(out)
		friendlyValues(fs)
	}()
	fmt.Fprint(w, strings.TrimRight(header, "\n")+"\n\nflags:\n")
	fs.PrintDefaults()
}

// unknownFlag returns the name in flag's "flag provided but not defined: -x".
func unknownFlag(err error) (string, bool) {
	s, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: ")
	return strings.TrimLeft(s, "-"), ok
}

// closestFlag returns the flag name nearest to name by edit distance when it is
// close enough to be a typo (at most 2 edits, or a third of the name), else "".
func closestFlag(fs *flag.FlagSet, name string) string {
	best, bestD := "", max(2, len(name)/3)+1
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// friendlyValue wraps a flag's value so that a value of the wrong kind is
// answered with what was expected and an example, where the flag package says
// only "parse error". It forwards everything else to the wrapped value.
type friendlyValue struct{ flag.Value }

// friendlyValues wraps every duration and number flag of fs (once).
func friendlyValues(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if _, done := f.Value.(friendlyValue); done {
			return
		}
		if g, ok := f.Value.(flag.Getter); ok && expected(g.Get()) != "" {
			f.Value = friendlyValue{f.Value}
		}
	})
}

// expected describes the values a flag of v's type takes, with examples; ""
// for types whose own errors are clear enough (strings, bools, custom flags).
func expected(v any) string {
	switch v.(type) {
	case time.Duration:
		return "a duration with a unit, e.g. 5s, 250ms or 1m30s"
	case int, int64:
		return "a whole number, e.g. 100"
	case uint, uint64:
		return "a whole number from 0, e.g. 100"
	case float64:
		return "a number, e.g. 20 or 0.5"
	}
	return ""
}

func (v friendlyValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		return fmt.Errorf("want %s", expected(v.Value.(flag.Getter).Get()))
	}
	return nil
}

// Get returns the wrapped value, so the wrapper stays a flag.Getter.
func (v friendlyValue) Get() any { return v.Value.(flag.Getter).Get() }

// String is the wrapped value's ("" for a zero friendlyValue).
func (v friendlyValue) String() string {
	if v.Value == nil {
		return ""
	}
	return v.Value.String()
}

// fieldFlags maps the fields of the struct cfg points to onto the names of
// the flags of fs that set them (found by address: a flag defined with
// fs.IntVar(&cfg.Shards, "shards", …) maps Shards to shards).
func fieldFlags(fs *flag.FlagSet, cfg any) map[string]string {
	addr := map[uintptr]string{}
	fs.VisitAll(func(f *flag.Flag) {
		v := f.Value
		if w, ok := v.(friendlyValue); ok {
			v = w.Value
		}
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
			addr[rv.Pointer()] = f.Name
		}
	})
	out := map[string]string{}
	s := reflect.ValueOf(cfg).Elem()
	for i := range s.NumField() {
		if name, ok := addr[s.Field(i).Addr().Pointer()]; ok {
			out[s.Type().Field(i).Name] = name
		}
	}
	return out
}

// goIdent matches the Go field names that validation errors quote.
var goIdent = regexp.MustCompile(`\b[A-Z][A-Za-z0-9]*\b`)

// configError rewrites err, a Validate error wrapping sentinel ("pkg: invalid
// config: Field: reason"), so that it names the flags that set the fields of
// cfg (see fieldFlags; extra adds fields set by other means, such as a list
// flag parsed into a field). The result still wraps err; an error that does not
// wrap sentinel is returned as it is.
func configError(err, sentinel error, fs *flag.FlagSet, cfg any, extra map[string]string) error {
	if !errors.Is(err, sentinel) {
		return err
	}
	names := fieldFlags(fs, cfg)
	for k, v := range extra {
		names[k] = v
	}
	msg := strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
	msg = goIdent.ReplaceAllStringFunc(msg, func(id string) string {
		if f, ok := names[id]; ok {
			return "--" + f
		}
		return id
	})
	return wrapped{msg: msg, err: err}
}

// wrapped is an error with its own message that still unwraps to the original.
type wrapped struct {
	msg string
	err error
}

func (w wrapped) Error() string { return w.msg }
func (w wrapped) Unwrap() error { return w.err }

// percentFlag is a percentage: "5%" or "5" both mean five percent.
type percentFlag struct {
	set bool
	pct float64
}

func (p *percentFlag) String() string {
	if p == nil || !p.set {
		return ""
	}
	return strconv.FormatFloat(p.pct, 'f', -1, 64) + "%"
}

func (p *percentFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want a percentage, e.g. 5%% or 0.5%%")
	}
	p.set, p.pct = true, v
	return nil
}
