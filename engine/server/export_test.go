package server

import "github.com/shardhub/shardhub/engine"

// StatsTicks returns how many intervals e's stats publisher has run, or -1
// when it has none.
func StatsTicks(e *engine.Engine) int64 {
	p, ok := publishers.Load(e)
	if !ok {
		return -1
	}
	return p.(*statsPublisher).ticks.Load()
}
