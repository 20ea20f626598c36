package loadtest

import (
	"os"
	"runtime"
)

// memUse is the memory of a load-generator process: the Go heap in use and
// the goroutine stacks right after a collection, and the resident set.
type memUse struct {
	Heap  uint64 `json:"heap"`
	Stack uint64 `json:"stack"`
	RSS   uint64 `json:"rss"`
}

// sampleMemory collects garbage and reads this process's memory. It stops
// the world for a moment: the idle scenario calls it before the first dial
// and at the end of the hold, nothing calls it while measuring deliveries.
func sampleMemory() memUse {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := procRSS(os.Getpid())
	return memUse{Heap: ms.HeapInuse, Stack: ms.StackInuse, RSS: rss}
}

// fleetMemory is what holding connections cost the processes of a fleet:
// their memory before the first dial (Base) and at the end of the hold
// (Held), summed over the processes, and the connections open then.
type fleetMemory struct {
	Base  memUse `json:"base"`
	Held  memUse `json:"held"`
	Conns int64  `json:"conns"`
}

func (m *fleetMemory) add(o *fleetMemory) {
	if o == nil {
		return
	}
	m.Base.Heap += o.Base.Heap
	m.Base.Stack += o.Base.Stack
	m.Base.RSS += o.Base.RSS
	m.Held.Heap += o.Held.Heap
	m.Held.Stack += o.Held.Stack
	m.Held.RSS += o.Held.RSS
	m.Conns += o.Conns
}

// perConn returns the growth of heap, stacks and RSS per connection held.
func (m *fleetMemory) perConn() (heap, stack, rss float64) {
	n := float64(m.Conns)
	d := func(held, base uint64) float64 { return (float64(held) - float64(base)) / n }
	return d(m.Held.Heap, m.Base.Heap), d(m.Held.Stack, m.Base.Stack), d(m.Held.RSS, m.Base.RSS)
}
