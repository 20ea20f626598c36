package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shardhub/shardhub/engine"
)

// registry keeps ws:conn:<id> → instance current for this instance's
// connections, and the instance's heartbeat. ConnAdded and ConnRemoved only
// touch memory; the registry loop writes in pipelined batches.
type registry struct {
	b       *Broker
	started time.Time
	host    string
	count   atomic.Int64 // connections here

	mu      sync.Mutex          // guards local, pending and resync.
	local   map[string]struct{} // connections here
	pending map[string]bool     // id → added (true) or removed (false) since the last flush; bounded by the connections seen in one flush period
	resync  bool                // rewrite every local entry at the next flush: a write failed, or Redis came back

	kick    chan struct{}                  // capacity 1: resync and heartbeat now
	beatDue atomic.Bool                    // the last heartbeat failed: send one at the next flush
	peers   atomic.Pointer[map[string]int] // other instances → their subscriber connections, as last listed while the cluster path was ready
}

func newRegistry(b *Broker) *registry {
	host, _ := os.Hostname()
	return &registry{
		b:       b,
		started: time.Now(),
		host:    host,
		local:   make(map[string]struct{}),
		pending: make(map[string]bool),
		kick:    make(chan struct{}, 1),
	}
}

// resyncNow makes the registry loop rewrite every entry of this instance and
// heartbeat at once: Redis came back, possibly empty (restarted without
// persistence), and the cluster must relearn this instance's connections
// without waiting for the next refresh.
func (r *registry) resyncNow() {
	r.mu.Lock()
	r.resync = true
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// knownPeers returns the other instances as last listed while the cluster
// path was ready: after an outage the monitor waits for them.
func (r *registry) knownPeers() map[string]int {
	if p := r.peers.Load(); p != nil {
		return *p
	}
	return nil
}

// ConnAdded records a connection of this instance in the cluster registry. It
// never blocks: the entry is written at the next flush (Config.RegistryFlush).
func (b *Broker) ConnAdded(id string) {
	r := b.reg
	if r == nil {
		return
	}
	r.mu.Lock()
	if _, ok := r.local[id]; !ok {
		r.local[id] = struct{}{}
		r.count.Add(1)
	}
	r.pending[id] = true
	r.mu.Unlock()
}

// ConnRemoved drops a connection from the registry (at the next flush).
func (b *Broker) ConnRemoved(id string) {
	r := b.reg
	if r == nil {
		return
	}
	r.mu.Lock()
	if _, ok := r.local[id]; ok {
		delete(r.local, id)
		r.count.Add(-1)
	}
	r.pending[id] = false
	r.mu.Unlock()
}

// Locate returns the instance holding connection id, or engine.ErrConnNotFound
// when no live instance has it (an instance that stopped heartbeating counts as
// gone before its connection keys expire).
func (b *Broker) Locate(ctx context.Context, id string) (string, error) {
	if err := b.usable(); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.SendTimeout)
	defer cancel()
	inst, err := b.client.Get(ctx, b.names.conn+id).Result()
	if errors.Is(err, redis.Nil) {
		return "", engine.ErrConnNotFound
	}
	if err != nil {
		return "", fmt.Errorf("redisbroker: locating %q: %w", id, err)
	}
	if inst == b.id {
		return inst, nil
	}
	n, err := b.client.Exists(ctx, b.names.instance+inst).Result()
	if err != nil {
		return "", fmt.Errorf("redisbroker: locating %q: %w", id, err)
	}
	if n == 0 {
		return "", engine.ErrConnNotFound
	}
	return inst, nil
}

// Instance is one live instance of the cluster, as its heartbeat says.
type Instance struct {
	ID          string    `json:"id"`
	Connections int64     `json:"connections"`
	PubSubConns int       `json:"pubsub_conns,omitempty"` // its probe channels are probe:<id>:0..n-1
	Host        string    `json:"host,omitempty"`
	PID         int       `json:"pid,omitempty"`
	Started     time.Time `json:"started"`
	Heartbeat   time.Time `json:"heartbeat"`
}

// Instances lists the live instances (their heartbeat key has not expired),
// sorted by id.
func (b *Broker) Instances(ctx context.Context) ([]Instance, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	minScore := time.Now().Add(-b.cfg.InstanceTTL).UnixMilli()
	ids, err := b.client.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: b.names.instances, ByScore: true, Start: strconv.FormatInt(minScore, 10), Stop: "+inf",
	}).Result()
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return []Instance{}, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = b.names.instance + id
	}
	vals, err := b.client.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Instance, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue // expired since the ZRANGE
		}
		var in Instance
		if json.Unmarshal([]byte(s), &in) == nil {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Cluster is Instances shaped for engine/server Options.Cluster.
func (b *Broker) Cluster(ctx context.Context) (any, error) {
	ins, err := b.Instances(ctx)
	if err != nil {
		return nil, err
	}
	total := int64(0)
	for _, in := range ins {
		total += in.Connections
	}
	return map[string]any{"instances": ins, "connections": total, "self": b.id}, nil
}

// run is the registry loop: flushes added/removed connections every
// RegistryFlush, rewrites every local entry every ConnRefresh and at once
// when Redis comes back (resyncNow; SET with TTL, in pipelined batches), and
// heartbeats every HeartbeatInterval and at once when Redis comes back. Runs
// in its own goroutine until Close, when it removes this instance's entries.
func (r *registry) run() {
	b := r.b
	defer b.wg.Done()
	flush := time.NewTicker(b.cfg.RegistryFlush)
	defer flush.Stop()
	refresh := time.NewTicker(b.cfg.ConnRefresh)
	defer refresh.Stop()
	beat := time.NewTicker(b.cfg.HeartbeatInterval)
	defer beat.Stop()
	r.heartbeat()
	for {
		select {
		case <-flush.C:
			r.flush(false)
			if r.beatDue.Load() {
				r.heartbeat()
			}
		case <-r.kick:
			r.flush(true)
			r.heartbeat()
		case <-refresh.C:
			r.flush(true)
		case <-beat.C:
			r.heartbeat()
		case <-b.quit:
			if !b.abandon {
				r.flush(false)
				r.leave()
			}
			return
		}
	}
}

// flush writes pending changes, or every local entry when all is set or a
// previous write failed.
func (r *registry) flush(all bool) {
	b := r.b
	r.mu.Lock()
	all = all || r.resync
	pending := r.pending
	if len(pending) == 0 && !all {
		r.mu.Unlock()
		return
	}
	r.pending = make(map[string]bool)
	var sets, dels []string
	if all {
		sets = make([]string, 0, len(r.local))
		for id := range r.local {
			sets = append(sets, id)
		}
		for id, added := range pending {
			if !added {
				dels = append(dels, id)
			}
		}
	} else {
		for id, added := range pending {
			if added {
				sets = append(sets, id)
			} else {
				dels = append(dels, id)
			}
		}
	}
	resync := r.resync
	r.resync = false
	r.mu.Unlock()
	if !b.up.Load() {
		r.failed(nil, time.Time{})
		return
	}
	if resync {
		b.m.registryResyncs.Inc()
		b.m.registryResyncKeys.Add(len(sets))
	}
	ctx := context.Background()
	ttl := b.cfg.ConnTTL
	for len(sets)+len(dels) > 0 {
		pipe := b.client.Pipeline()
		n := 0
		for ; n < registryChunk && len(sets) > 0; n++ {
			pipe.Set(ctx, b.names.conn+sets[0], b.id, ttl)
			sets = sets[1:]
		}
		if n < registryChunk && len(dels) > 0 {
			k := min(registryChunk-n, len(dels))
			keys := make([]string, k)
			for i := range keys {
				keys[i] = b.names.conn + dels[i]
			}
			pipe.Del(ctx, keys...)
			dels = dels[k:]
		}
		began := time.Now()
		if _, err := pipe.Exec(ctx); err != nil {
			r.failed(err, began)
			return
		}
	}
}

// failed notes a write, begun at began, that did not happen (err nil: Redis
// was known down, nothing was sent): the next flush rewrites everything.
func (r *registry) failed(err error, began time.Time) {
	r.mu.Lock()
	r.resync = true
	r.mu.Unlock()
	if err != nil {
		r.b.m.registryErrors.Inc()
		if isNetworkError(err) {
			r.b.markDown(err, began)
		}
	}
}

// heartbeat writes ws:instance:<id> with its TTL and the connection count, and
// the instance's score in ws:instances.
func (r *registry) heartbeat() {
	b := r.b
	if !b.up.Load() {
		return
	}
	now := time.Now()
	in := Instance{ID: b.id, Connections: r.count.Load(), PubSubConns: b.cfg.PubSubConns, Host: r.host, PID: os.Getpid(),
		Started: r.started, Heartbeat: now}
	js, _ := json.Marshal(in)
	ctx, cancel := context.WithTimeout(context.Background(), defaultCommandTimeout)
	defer cancel()
	var tm *redis.TimeCmd
	_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		tm = p.Time(ctx)
		p.Set(ctx, b.names.instance+b.id, js, b.cfg.InstanceTTL)
		p.ZAdd(ctx, b.names.instances, redis.Z{Score: float64(now.UnixMilli()), Member: b.id})
		// Forget instances dead for long; live ones are filtered by score anyway.
		p.ZRemRangeByScore(ctx, b.names.instances, "-inf", strconv.FormatInt(now.Add(-10*b.cfg.InstanceTTL).UnixMilli(), 10))
		return nil
	})
	if err != nil {
		r.beatDue.Store(true)
		b.m.heartbeatsErr.Inc()
		if isNetworkError(err) {
			b.markDown(err, now)
		}
		return
	}
	r.beatDue.Store(false)
	b.measureSkew(now, time.Now(), tm.Val())
	if b.ready.Load() { // never from a Redis just restarted, empty: the peers are those known before
		if ins, err := b.Instances(ctx); err == nil {
			peers := make(map[string]int, len(ins))
			for _, in := range ins {
				if in.ID != b.id {
					peers[in.ID] = max(in.PubSubConns, 1)
				}
			}
			r.peers.Store(&peers)
		}
	}
}

// leave deletes this instance's heartbeat (its connection entries were
// deleted as the engine closed them).
func (r *registry) leave() {
	b := r.b
	ctx, cancel := context.WithTimeout(context.Background(), defaultCommandTimeout)
	defer cancel()
	_, _ = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, b.names.instance+b.id)
		p.ZRem(ctx, b.names.instances, b.id)
		return nil
	})
}
