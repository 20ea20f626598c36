//go:build unix

package loadtest

import (
	"syscall"
	"time"
)

// RaiseFileLimit raises this process's soft RLIMIT_NOFILE to its hard limit
// and returns the resulting soft limit. Every socket is a file: the default
// soft limit (often 1024) would cap a run long before the hard one.
func RaiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			rl = want
		}
	}
	return uint64(rl.Cur), nil
}

// CPUTime returns the user and system CPU time this process has used. The
// load generator reads it around its measured phase; `shardhub bench --real`
// reads the CPU of the server it runs in-process.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
