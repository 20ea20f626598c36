package redisbroker

import (
	"strings"
	"sync"
)

// Sequence numbers: how an instance knows exactly what it missed.
//
// Redis pub/sub is at most once: a message published while a subscriber's
// connection is down (Redis restarted, the connection in reconnect backoff,
// replaced after a failed probe) is simply not delivered to it, and the
// publisher cannot tell. So every publication and broadcast carries its
// publisher's position on its Redis channel:
//
//	epoch   the publishing broker's start time (ns): a restart is a new epoch
//	stream  a number the publisher gives the channel's sequence when it starts
//	        one (first publication, or again after it forgot an idle channel)
//	seq     1, 2, 3, … within (epoch, stream)
//
// Publisher side (seqTable, owned by one writer goroutine): the number is
// assigned when a message is first sent, so messages dropped before that (past
// the backlog bound, on Close) leave no hole. A message sent again after an
// ambiguous failure (a timeout: Redis may have run it) keeps its number.
//
// Receiver side (tracker, one per subscriber connection): for every Redis
// channel this instance wants, the last position seen from each origin. A
// message with the next number is delivered; a lower one (or one of an older
// stream) is a duplicate and dropped; a higher one is delivered and the
// numbers skipped are counted lost (engine.DropBrokerLost). The first message
// from an origin sets the baseline: nothing before it was owed, since the
// subscription is newer. A newer stream or epoch from a known origin started
// while this instance was subscribed, so its numbers before the first one seen
// were owed: seq-1 are counted lost. The state of a channel is forgotten when
// the instance stops wanting it, and an origin's entry after trackIdle without
// news.
//
// Tail loss (the last messages before a pause, missed during a reconnect) has
// no next message to reveal it. After any subscriber connection comes back,
// its instance publishes a sync request (kind 'R'); every instance answers by
// announcing (kind 'S'), on each channel it published on recently, its
// stream's last confirmed number. The announcement travels the channel itself,
// through the same writer, so it arrives after the messages it covers.
//
// A history publication whose script failed for good is replaced, inside the
// script, by a void (kind 'V') carrying its number, so receivers see no hole.
// A plain PUBLISH never fails for good: it is retried.

const (
	// seqRotate is how often a writer forgets the channels it has not
	// published on since the previous rotation: a channel's sequence lives
	// between one and two periods after its last publication.
	seqRotate = 2 * 60 // seconds
	// trackIdle is how long a receiver keeps an origin's position on a channel
	// without news; longer than a publisher keeps the sequence, so a new
	// stream of a known origin is still recognized as one.
	trackIdle = 10 * 60 // seconds
)

// chanSeq is a publisher's sequence on one Redis channel. Owned by the writer
// goroutine of the channel.
type chanSeq struct {
	stream    uint64
	next      uint64 // last number assigned
	confirmed uint64 // last number Redis took (a prefix: the writer's queue is FIFO)
	tag       string // history: the sequence's tag prefix in stream entries (history.go), made on first use
}

// seqTable is a writer's sequences, by Redis channel. Two generations make
// forgetting idle channels O(1): rotate drops the older one. Owned by the
// writer goroutine.
type seqTable struct {
	cur, prev map[string]*chanSeq
}

func newSeqTable() seqTable {
	return seqTable{cur: make(map[string]*chanSeq), prev: make(map[string]*chanSeq)}
}

// get returns rc's sequence, starting a new stream (newStream) when there is
// none.
func (t *seqTable) get(rc string, newStream func() uint64) *chanSeq {
	if cs := t.cur[rc]; cs != nil {
		return cs
	}
	cs := t.prev[rc]
	if cs != nil {
		delete(t.prev, rc)
	} else {
		cs = &chanSeq{stream: newStream()}
	}
	t.cur[rc] = cs
	return cs
}

// rotate forgets the channels not used during the last two periods.
func (t *seqTable) rotate() {
	t.prev = t.cur
	t.cur = make(map[string]*chanSeq, len(t.prev))
}

// each calls f for every sequence.
func (t *seqTable) each(f func(rc string, cs *chanSeq)) {
	for rc, cs := range t.cur {
		f(rc, cs)
	}
	for rc, cs := range t.prev {
		f(rc, cs)
	}
}

// position is the last message a receiver saw from one origin on one channel.
type position struct {
	epoch, stream, seq uint64
	seen               int64 // coarse unix seconds of the last news, for expiry
}

// verdict is what a receiver does with a sequenced message.
type verdict uint8

const (
	deliver   verdict = iota // new: hand it to the engine
	duplicate                // seen before (or of an older stream): drop
	unwanted                 // a channel this instance does not want (any more): ignore
)

// tracker is one subscriber connection's positions, by wanted Redis channel
// and origin. The reader goroutine observes; the controller adds and removes
// channels; the monitor expires idle origins.
type tracker struct {
	mu    sync.Mutex                      // guards chans and the maps and positions in it.
	chans map[string]map[string]*position // Redis channel → origin → position
}

func newTracker() *tracker {
	return &tracker{chans: make(map[string]map[string]*position)}
}

// want starts tracking rc, with no baseline.
func (t *tracker) want(rc string) {
	t.mu.Lock()
	if _, ok := t.chans[rc]; !ok {
		t.chans[rc] = make(map[string]*position)
	}
	t.mu.Unlock()
}

// drop forgets rc: publications sent while it was not wanted were not owed.
func (t *tracker) drop(rc string) {
	t.mu.Lock()
	delete(t.chans, rc)
	t.mu.Unlock()
}

// observe records e (a sequenced envelope) received on rc at coarse time now
// and returns what to do with it and how many messages it reveals as missed.
func (t *tracker) observe(rc string, e *envelope, now int64) (v verdict, lost uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	origins, ok := t.chans[rc]
	if !ok {
		return unwanted, 0
	}
	// An announcement says "the stream reached seq": seq itself may be
	// missing. Every other kind is message seq itself.
	own := uint64(1)
	if e.kind == kindAnnounce {
		own = 0
	}
	p := origins[e.origin]
	switch {
	case p == nil:
		// The baseline: nothing earlier was owed. Clone the key, which
		// would otherwise pin the whole payload.
		origins[strings.Clone(e.origin)] = &position{epoch: e.epoch, stream: e.stream, seq: e.seq, seen: now}
		return deliver, 0
	case e.epoch == p.epoch && e.stream == p.stream:
		if e.seq <= p.seq {
			p.seen = now
			return duplicate, 0
		}
		lost = e.seq - p.seq - own
	case e.epoch > p.epoch || (e.epoch == p.epoch && e.stream > p.stream):
		// A stream that started while this instance was subscribed (it
		// knew the previous one): its numbers before this one were owed.
		lost = e.seq - own
	default:
		return duplicate, 0 // an older stream: a late copy
	}
	p.epoch, p.stream, p.seq, p.seen = e.epoch, e.stream, e.seq, now
	return deliver, lost
}

// expire forgets the origins without news since before cutoff (coarse unix
// seconds).
func (t *tracker) expire(cutoff int64) {
	t.mu.Lock()
	for _, origins := range t.chans {
		for o, p := range origins {
			if p.seen < cutoff {
				delete(origins, o)
			}
		}
	}
	t.mu.Unlock()
}

// size returns how many positions are tracked.
func (t *tracker) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, origins := range t.chans {
		n += len(origins)
	}
	return n
}
