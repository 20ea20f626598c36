//go:build !unix

package loadtest

import "time"

// RaiseFileLimit does nothing on this platform and reports no limit.
func RaiseFileLimit() (uint64, error) { return 1 << 20, nil }

// cpuTime is unknown on this platform.
func cpuTime() time.Duration { return 0 }
