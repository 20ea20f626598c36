package engine

// inboundLimits are the engine's per-connection inbound limits, derived once
// from Config (see newInboundLimits).
type inboundLimits struct {
	rate, burst         float64 // frames per second, and the burst above it
	byteRate, byteBurst float64 // payload bytes per second, and the burst
	decay               float64 // penalty forgiven per second
	maxPenalty          float64 // penalty past which the connection is closed
}

// newInboundLimits derives the limits from a Config with defaults applied.
//
// A frame over budget adds one to the connection's penalty, which decays at
// half the frame rate. A client sending at twice the rate has half its frames
// refused, so its penalty grows by rate/2 a second and passes maxPenalty (the
// larger of 1.5 s of the rate and the burst) after a few seconds; a flood ten
// times the rate gets there in a fraction of a second; a client that only
// bursts now and then never does.
func newInboundLimits(cfg *Config) inboundLimits {
	l := inboundLimits{
		rate:     cfg.InboundRate,
		burst:    float64(cfg.InboundBurst),
		byteRate: float64(cfg.InboundByteRate),
	}
	l.byteBurst = max(2*l.byteRate, float64(cfg.MaxMessageSize))
	l.decay = l.rate / 2
	l.maxPenalty = max(1.5*l.rate, l.burst)
	return l
}

// budget is a connection's inbound allowance: a token bucket of frames and
// one of bytes, and the penalty of refused frames. It lives in the connection
// and only the goroutine parsing the connection touches it. The zero value
// starts full.
type budget struct {
	frames, bytes, penalty float64
	last                   int64 // unix nanoseconds of the last refill; 0 = never
}

// Results of budget.take.
const (
	budgetOK       = iota // handle the frame
	budgetRefused         // drop it
	budgetExceeded        // close the connection
)

// take charges one frame of n payload bytes at ns (unix nanoseconds).
func (b *budget) take(ns int64, n int, l *inboundLimits) int {
	if b.last == 0 {
		b.frames, b.bytes, b.last = l.burst, l.byteBurst, ns
	} else if dt := float64(ns-b.last) / 1e9; dt > 0 {
		b.frames = min(b.frames+dt*l.rate, l.burst)
		if l.byteRate > 0 {
			b.bytes = min(b.bytes+dt*l.byteRate, l.byteBurst)
		}
		b.penalty = max(b.penalty-dt*l.decay, 0)
		b.last = ns
	}
	cost := float64(n)
	if b.frames >= 1 && (l.byteRate <= 0 || b.bytes >= cost) {
		b.frames--
		if l.byteRate > 0 {
			b.bytes -= cost
		}
		return budgetOK
	}
	b.penalty++
	if b.penalty > l.maxPenalty {
		return budgetExceeded
	}
	return budgetRefused
}
