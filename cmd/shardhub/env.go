package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// applyEnv sets every flag not given on the command line from the environment
// variable prefix + NAME (the flag name upper-cased, dashes as underscores), so
// `--max-message-size` can come from SHARDHUB_MAX_MESSAGE_SIZE.
func applyEnv(fs *flag.FlagSet, prefix string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		key := prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", key, v, e)
			}
		}
	})
	return err
}
