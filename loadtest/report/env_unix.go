//go:build unix

package report

import "syscall"

func rlimitNofile() [2]uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return [2]uint64{}
	}
	return [2]uint64{uint64(rl.Cur), uint64(rl.Max)}
}
