//go:build !race

package loadtest

// raceEnabled says the race detector is on: sync.Pool then drops some of what
// it is given on purpose, so allocation counts mean nothing.
const raceEnabled = false
