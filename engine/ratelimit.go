package engine

import "time"

// tokenBucket is a per-connection inbound rate limiter. It lives in Conn and is
// touched only by the connection's read goroutine, so it needs no lock and costs
// 16 bytes per connection.
type tokenBucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last refill
}

func (b *tokenBucket) init(burst int) {
	b.tokens = float64(burst)
	b.last = time.Now().UnixNano()
}

// allow takes one token, refilling at rate per second up to burst.
func (b *tokenBucket) allow(now time.Time, rate float64, burst int) bool {
	ns := now.UnixNano()
	if elapsed := ns - b.last; elapsed > 0 {
		b.tokens += float64(elapsed) * rate / 1e9
		if b.tokens > float64(burst) {
			b.tokens = float64(burst)
		}
		b.last = ns
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
