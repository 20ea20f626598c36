package redisbroker

import (
	"context"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// pubItem is one message waiting for its writer.
type pubItem struct {
	channel string       // Redis pub/sub channel
	payload []byte       // the whole envelope, or for history the data alone
	stream  string       // history stream key; "" for a plain PUBLISH
	rule    *HistoryRule // history settings when stream is set
	head    []byte       // history: the envelope up to the offset field
}

// writer sends queued messages to Redis in pipelines: whatever is waiting when
// it wakes, up to MaxBatch, leaves in one round trip, so a burst costs a few
// round trips rather than one per message.
type writer struct {
	b *Broker
	// q is bounded by Config.PublishQueue; when full, enqueue drops the message
	// (counted, ErrQueueFull) rather than block the engine.
	q chan pubItem
}

// run is the writer loop. Runs in its own goroutine until Close, when it
// flushes what is still queued (one attempt) and returns.
func (w *writer) run() {
	defer w.b.wg.Done()
	batch := make([]pubItem, 0, w.b.cfg.MaxBatch)
	for {
		select {
		case it := <-w.q:
			batch = w.fill(append(batch[:0], it))
			w.send(batch)
			clear(batch)
		case <-w.b.quit:
			for {
				batch = w.fill(batch[:0])
				if len(batch) == 0 {
					return
				}
				w.send(batch)
				clear(batch)
			}
		}
	}
}

func (w *writer) fill(batch []pubItem) []pubItem {
	for len(batch) < w.b.cfg.MaxBatch {
		select {
		case it := <-w.q:
			batch = append(batch, it)
		default:
			return batch
		}
	}
	return batch
}

// send writes one batch as one pipeline. A history script missing from Redis
// (it restarted) is loaded and the history items of the batch sent again, in
// order.
func (w *writer) send(batch []pubItem) {
	b := w.b
	if !b.up.Load() {
		b.m.unpublished(reasonUnavailable, len(batch))
		return
	}
	failed, noscript, err := w.exec(batch)
	if len(noscript) > 0 {
		if lerr := publishScript.Load(context.Background(), b.client).Err(); lerr == nil {
			var f2 int
			f2, _, err = w.exec(noscript)
			failed += f2
		} else {
			failed += len(noscript)
			err = lerr
		}
	}
	b.m.batches.Inc()
	b.m.published.Add(len(batch) - failed)
	if failed > 0 {
		b.m.unpublished(reasonError, failed)
		if isNetworkError(err) {
			b.markDown(err)
		} else if err != nil {
			b.log.Warn("redisbroker: publish failed", "messages", failed, "err", err)
		}
	}
}

// exec runs items as one pipeline. It returns how many failed, the history
// items that failed only for want of the script, and the first error.
func (w *writer) exec(items []pubItem) (failed int, noscript []pubItem, firstErr error) {
	b := w.b
	ctx := context.Background()
	pipe := b.client.Pipeline()
	for i := range items {
		it := &items[i]
		if it.stream == "" {
			pipe.Publish(ctx, it.channel, it.payload)
			continue
		}
		publishScript.EvalSha(ctx, pipe, []string{it.stream},
			it.channel, it.rule.Size, it.rule.TTL.Milliseconds(), it.head, it.payload)
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return 0, nil, nil
	}
	if len(cmds) != len(items) { // the pipeline never left
		return len(items), nil, err
	}
	for i, c := range cmds {
		cerr := c.Err()
		if cerr == nil || cerr == redis.Nil {
			continue
		}
		if items[i].stream != "" && strings.HasPrefix(cerr.Error(), "NOSCRIPT") {
			noscript = append(noscript, items[i])
			continue
		}
		failed++
		if firstErr == nil {
			firstErr = cerr
		}
	}
	if firstErr == nil && len(noscript) == 0 {
		firstErr = err
	}
	return failed, noscript, firstErr
}

// isNetworkError tells a lost Redis from a command error.
func isNetworkError(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := err.(redis.Error); ok {
		return strings.HasPrefix(err.Error(), "LOADING") || strings.HasPrefix(err.Error(), "READONLY")
	}
	return true
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
