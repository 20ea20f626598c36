package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shardhub/shardhub/engine"
)

// privateScript publishes a private message unless Redis runs it after its
// deadline. SendTo gives up after SendTimeout and reports the message not
// sent; a Redis that was frozen or paused meanwhile would otherwise run the
// PUBLISH when it wakes and deliver, seconds later, a message its sender was
// told had failed. The deadline is in Redis' clock (the sender's clock plus
// the skew measured at each heartbeat). ARGV: pub/sub channel, envelope,
// deadline in ms (0: none). Returns the PUBLISH count, or -1 past the
// deadline.
var privateScript = redis.NewScript(`
local dl = tonumber(ARGV[3])
if dl > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > dl then return -1 end
end
return redis.call('PUBLISH', ARGV[1], ARGV[2])
`)

// errLate is SendTo's error when Redis ran the send after its deadline.
var errLate = errors.New("redisbroker: private message reached Redis after its deadline; not sent")

// SendTo routes a private message to connection to on instance, over that
// instance's own channel. It returns engine.ErrConnNotFound when the instance
// does not listen (it is gone, or its subscription is down). An error means
// the message was not delivered and will not be later: Redis drops it if it
// runs the send after SendTimeout.
func (b *Broker) SendTo(ctx context.Context, instance, to, from string, data []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.SendTimeout)
	defer cancel()
	deadline := int64(0)
	if d, ok := ctx.Deadline(); ok && b.skewKnown.Load() {
		deadline = d.UnixMilli() + b.skew.Load()
	}
	n, err := privateScript.Run(ctx, b.client, nil,
		b.names.prefix+"inst:"+instance, encode(kindPrivate, b.id, data, to, from), deadline).Int64()
	switch {
	case err != nil:
		b.m.privateFailed.Inc()
		if isNetworkError(err) {
			b.markDown(err, time.Now())
		}
		return fmt.Errorf("redisbroker: sending to %q: %w", to, err)
	case n < 0:
		b.m.privateFailed.Inc()
		return fmt.Errorf("redisbroker: sending to %q: %w", to, errLate)
	case n == 0:
		return engine.ErrConnNotFound
	}
	b.m.privateSent.Inc()
	return nil
}

// measureSkew records Redis' clock minus ours (ms), from a TIME answered
// between sent and got.
func (b *Broker) measureSkew(sent, got, redisTime time.Time) {
	if redisTime.IsZero() {
		return
	}
	mid := sent.Add(got.Sub(sent) / 2)
	b.skew.Store(redisTime.Sub(mid).Milliseconds())
	b.skewKnown.Store(true)
}
