//go:build !linux

package loadtest

import "syscall"

// bindNoPort is a Linux option; elsewhere the kernel's default applies.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
