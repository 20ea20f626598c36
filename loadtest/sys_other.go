//go:build !unix

package loadtest

import "time"

// RaiseFileLimit does nothing on this platform and reports no limit.
func RaiseFileLimit() (uint64, error) { return 1 << 20, nil }

// CPUTime is unknown on this platform: it returns 0.
func CPUTime() time.Duration { return 0 }
