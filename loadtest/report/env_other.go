//go:build !unix

package report

func rlimitNofile() [2]uint64 { return [2]uint64{} }
