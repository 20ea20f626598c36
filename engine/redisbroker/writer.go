package redisbroker

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shardhub/shardhub/engine"
)

const (
	// writerTick paces what a writer does besides sending: answering sync
	// requests, forgetting idle sequences, retrying after a command error.
	writerTick = 100 * time.Millisecond
	// syncCoalesce delays the answer to a sync request, so the requests of
	// several instances reconnecting together get one round of announcements.
	syncCoalesce = 200 * time.Millisecond
	// closeFlush bounds how long Close waits for the backlog to drain.
	closeFlush = time.Second
	// maxRetryWait caps the wait between retries after a command error
	// (not a lost connection: that waits for the monitor instead).
	maxRetryWait = time.Second
)

// pubItem is one message waiting in a writer's backlog, or an announcement.
type pubItem struct {
	rc    string       // Redis pub/sub channel
	buf   []byte       // headroom for the envelope head, then the data; an announcement's whole envelope
	start int          // where the encoded envelope starts in buf; -1 until the first send
	kind  byte         // kindPublication, kindBroadcast or kindAnnounce
	rule  *HistoryRule // history settings; nil for a plain PUBLISH
	seq   *chanSeq     // the channel's sequence, from the first send on
	cseq  uint64       // this message's number in it
	sent  bool         // sent before: Redis may have run it (history: the script checks)
}

// writer sends its share of the channels to Redis, in order, in pipelines:
// whatever is waiting when it wakes, up to MaxBatch, leaves in one round
// trip. Its queue is the backlog: a message stays in it until Redis answered
// it, so one that failed ambiguously (a timeout: Redis may have run it) is
// sent again, with the same sequence number, once the cluster path is ready
// again (receivers drop the copy they already have, seq.go).
type writer struct {
	b *Broker
	// maxMsgs and maxBytes are this writer's share of the backlog bounds;
	// past them push refuses a message (Publish returns ErrQueueFull).
	maxMsgs  int
	maxBytes int64

	mu       sync.Mutex    // guards q, msgs, bytes and sleeping.
	q        fifo[pubItem] // the first items may be sent and unconfirmed
	msgs     int           // messages in the queue (announcements excluded)
	bytes    int64         // their data bytes
	sleeping bool          // the writer waits on wake for a new message

	wake    chan struct{} // capacity 1: something to do; a full channel already has a wake-up pending
	syncReq atomic.Bool   // a sync request arrived: announce every sequence

	// Owned by the writer goroutine.
	seqs      seqTable
	batch     []pubItem
	scratch   []byte
	syncAt    time.Time // when to answer a sync request; zero when none is pending
	rotateAt  time.Time // next seqTable rotation
	retryAt   time.Time // no send before this, after a command error
	retryWait time.Duration
}

func newWriter(b *Broker, maxMsgs int, maxBytes int64) *writer {
	return &writer{
		b:        b,
		maxMsgs:  maxMsgs,
		maxBytes: maxBytes,
		wake:     make(chan struct{}, 1),
		seqs:     newSeqTable(),
		batch:    make([]pubItem, 0, b.cfg.MaxBatch),
		rotateAt: time.Now().Add(seqRotate * time.Second),
	}
}

func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// push queues a message. It refuses it (ErrQueueFull) past the bounds; a
// message larger than the byte bound alone still goes into an empty queue.
func (w *writer) push(it pubItem, size int) error {
	w.mu.Lock()
	if w.msgs >= w.maxMsgs || (w.msgs > 0 && w.bytes+int64(size) > w.maxBytes) {
		w.mu.Unlock()
		return ErrQueueFull
	}
	w.q.push(it)
	w.msgs++
	w.bytes += int64(size)
	wake := w.sleeping
	w.sleeping = false
	w.mu.Unlock()
	if wake {
		w.signal()
	}
	return nil
}

// backlog returns the messages and data bytes queued.
func (w *writer) backlog() (msgs int, bytes int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msgs, w.bytes
}

func (w *writer) dataSize(it *pubItem) int { return len(it.buf) - w.b.headroom }

// run is the writer loop. Runs in its own goroutine until Close, when it
// flushes what it can (briefly, if the cluster path is ready) and counts the
// rest dropped (shutdown).
func (w *writer) run() {
	defer w.b.wg.Done()
	b := w.b
	tick := time.NewTicker(writerTick)
	defer tick.Stop()
	last := time.Now() // of periodic: it runs at least every writerTick, busy or not
	for {
		select {
		case <-b.quit:
			w.shutdown()
			return
		default:
		}
		now := time.Now()
		if now.Sub(last) >= writerTick {
			last = now
			w.periodic(now)
		}
		ready := b.ready.Load()
		if !ready && b.cfg.BacklogMessages < 0 {
			w.dropAll(engine.DropBrokerUnavailable)
		}
		if ready && !now.Before(w.retryAt) && w.sendBatch() > 0 {
			continue
		}
		select {
		case <-w.wake:
		case <-tick.C:
		case <-b.quit:
		}
	}
}

// periodic answers sync requests and forgets idle sequences.
func (w *writer) periodic(now time.Time) {
	if w.syncReq.Swap(false) && w.syncAt.IsZero() {
		w.syncAt = now.Add(syncCoalesce)
	}
	if !w.syncAt.IsZero() && !now.Before(w.syncAt) {
		w.syncAt = time.Time{}
		w.announceAll()
	}
	if now.After(w.rotateAt) {
		w.seqs.rotate()
		w.rotateAt = now.Add(seqRotate * time.Second)
	}
}

// announceAll queues, for every sequence this writer keeps, an announcement
// of the last number Redis took; receivers that missed the tail of a stream
// (they were reconnecting) learn it from it. Announcements are not messages:
// they take no backlog room, but no more of them are queued than the message
// bound.
func (w *writer) announceAll() {
	b := w.b
	var ann []pubItem
	w.seqs.each(func(rc string, cs *chanSeq) {
		if cs.confirmed == 0 || len(ann) >= w.maxMsgs {
			return
		}
		env := appendSeqHead(make([]byte, 0, 64+len(b.id)), kindAnnounce, b.id, b.epoch, cs.stream, cs.confirmed)
		ann = append(ann, pubItem{rc: rc, buf: env, start: 0, kind: kindAnnounce})
	})
	if len(ann) == 0 {
		return
	}
	w.mu.Lock()
	for _, it := range ann {
		w.q.push(it)
	}
	w.mu.Unlock()
	b.m.announcements.Add(len(ann))
}

// sendBatch sends the head of the queue as one pipeline and returns how many
// items it took off the queue.
func (w *writer) sendBatch() int {
	b := w.b
	w.mu.Lock()
	batch := w.q.peek(w.batch[:0], b.cfg.MaxBatch)
	if len(batch) == 0 {
		w.sleeping = true
	}
	w.mu.Unlock()
	if len(batch) == 0 {
		return 0
	}
	resent := 0
	assigned := false
	for i := range batch {
		if it := &batch[i]; it.start < 0 {
			w.assign(it)
			assigned = true
		} else if it.kind != kindAnnounce {
			resent++
		}
	}
	if assigned { // keep the numbers for a resend: the queue's copies get them
		w.mu.Lock()
		w.q.each(len(batch), func(i int, q *pubItem) {
			q.start, q.seq, q.cseq, q.sent = batch[i].start, batch[i].seq, batch[i].cseq, true
		})
		w.mu.Unlock()
	}
	b.m.resent.Add(resent)

	began := time.Now()
	done, voided, err := w.exec(batch)
	if err != nil && done == 0 && isNoScript(err) {
		// Redis restarted and lost the script: load it, send again.
		if lerr := publishScript.Load(context.Background(), b.client).Err(); lerr != nil {
			err = lerr
		} else {
			done, voided, err = w.exec(batch)
		}
	}
	b.m.batches.Inc()
	w.confirm(batch[:done], voided)
	clear(batch)
	w.batch = batch[:0]
	if err == nil || (done > 0 && isNoScript(err)) { // the next round loads the script
		w.retryWait = 0
		return done
	}
	switch {
	case isNetworkError(err):
		// Redis is unreachable, frozen or restarting: keep everything and
		// wait for the monitor to find the path ready again.
		b.markDown(err, began)
		if b.cfg.BacklogMessages < 0 {
			w.dropAll(engine.DropBrokerUnavailable)
		}
	default:
		// A command error (an ACL refusing PUBLISH, a busy script): retry
		// after a growing pause; past the backlog bound, new messages are
		// refused and counted.
		w.retryWait = min(max(2*w.retryWait, writerTick), maxRetryWait)
		w.retryAt = time.Now().Add(w.retryWait)
		b.logLimited("publish", "redisbroker: publish failed; retrying", "err", err, "retry_in", w.retryWait)
	}
	return done
}

// assign gives a message its sequence number and encodes its envelope head in
// front of the data.
func (w *writer) assign(it *pubItem) {
	b := w.b
	cs := w.seqs.get(it.rc, b.newStream)
	cs.next++
	it.seq, it.cseq = cs, cs.next
	h := appendSeqHead(w.scratch[:0], it.kind, b.id, b.epoch, cs.stream, cs.next)
	if it.kind == kindPublication && it.rule == nil {
		h = appendField(h, "") // no offset; history gets its own from the script
	}
	w.scratch = h
	it.start = b.headroom - len(h)
	copy(it.buf[it.start:], h)
}

// exec sends items as one pipeline. done is the prefix Redis answered (of it,
// voided history publications replaced by a void), err the first other error,
// after which nothing counts as done: it is all sent again.
func (w *writer) exec(items []pubItem) (done, voided int, err error) {
	b := w.b
	ctx := context.Background()
	pipe := b.client.Pipeline()
	for i := range items {
		it := &items[i]
		if it.rule == nil {
			pipe.Publish(ctx, it.rc, it.buf[it.start:])
			continue
		}
		if it.seq.tag == "" {
			it.seq.tag = b.id + "|" + strconv.FormatUint(b.epoch, 10) + ":" + strconv.FormatUint(it.seq.stream, 10) + "|"
		}
		resend := 0
		if it.sent {
			resend = 1
		}
		publishScript.EvalSha(ctx, pipe, []string{b.names.hist + it.rc[len(b.names.ch):]},
			it.rc, it.rule.Size, it.rule.TTL.Milliseconds(), it.buf[it.start:b.headroom], it.buf[b.headroom:],
			it.seq.tag, it.cseq, resend)
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return len(items), 0, nil
	}
	if len(cmds) != len(items) { // the pipeline never left
		return 0, 0, err
	}
	for i, c := range cmds {
		cerr := c.Err()
		if cerr == nil || cerr == redis.Nil {
			done++
			continue
		}
		if items[i].rule != nil && strings.HasPrefix(cerr.Error(), voidErrPrefix) {
			done++
			voided++
			b.logLimited("void", "redisbroker: history publication failed in Redis; dropped", "channel", items[i].rc, "err", cerr)
			continue
		}
		return done, voided, cerr
	}
	return done, voided, nil
}

// confirm takes the items Redis answered off the head of the queue.
func (w *writer) confirm(items []pubItem, voided int) {
	if len(items) == 0 {
		return
	}
	msgs, bytes := 0, int64(0)
	for i := range items {
		it := &items[i]
		if it.kind == kindAnnounce {
			continue
		}
		msgs++
		bytes += int64(w.dataSize(it))
		it.seq.confirmed = it.cseq
	}
	m := w.b.m
	m.published.Add(msgs - voided)
	m.dropped[engine.DropBrokerUnavailable].Add(voided)
	w.mu.Lock()
	w.q.pop(len(items))
	w.msgs -= msgs
	w.bytes -= bytes
	w.mu.Unlock()
}

// dropAll empties the queue, counting its messages dropped for reason.
func (w *writer) dropAll(reason engine.DropReason) {
	w.mu.Lock()
	n := w.msgs
	w.q.reset()
	w.msgs, w.bytes = 0, 0
	w.mu.Unlock()
	w.b.m.dropped[reason].Add(n)
}

// shutdown flushes what it can within closeFlush, then drops the rest.
func (w *writer) shutdown() {
	b := w.b
	if !b.abandon {
		deadline := time.Now().Add(closeFlush)
		for b.ready.Load() && time.Now().Before(deadline) {
			if w.sendBatch() == 0 {
				break
			}
		}
	}
	w.dropAll(engine.DropShutdown)
}

// isNetworkError tells a lost, frozen or restarting Redis from a command
// error.
func isNetworkError(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := err.(redis.Error); ok {
		msg := err.Error()
		return strings.HasPrefix(msg, "LOADING") || strings.HasPrefix(msg, "READONLY") ||
			strings.HasPrefix(msg, "MASTERDOWN") || strings.HasPrefix(msg, "TRYAGAIN")
	}
	return true
}

func isNoScript(err error) bool { return strings.HasPrefix(err.Error(), "NOSCRIPT") }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
