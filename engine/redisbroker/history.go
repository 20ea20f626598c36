package redisbroker

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/shardhub/shardhub/engine"
)

// publishScript stores a publication in its channel's stream and publishes it
// with the stream id as offset, atomically: offsets and publish order agree,
// and a reader that sees a publication live can rely on it being in the
// stream. Each entry also records its predecessor's id (field p), so History
// can tell "the client saw the entry just trimmed" (recoverable) from "entries
// after the client's offset were trimmed" (not), and its publisher's sequence
// tag (field s: origin|epoch:stream|seq).
//
// The writer may send a publication twice (after a timeout: Redis may have
// run it, perhaps while the subscribers were reconnecting), so the script
// keeps, per channel and origin, the last sequence number it stored (hash
// ws:hseq:<channel>, same TTL as the stream). A number it has seen is not
// stored again: it finds the entry by its tag (scanning back from the newest,
// at most dupScan entries) and publishes it again with its offset, for the
// subscribers that missed it; those that have it drop the copy (seq.go). An
// entry trimmed or past the scan is published without offset. If storing
// fails for good (out of memory, a key of the wrong type), the script
// publishes a void in the publication's place, so receivers see no hole in
// the sequence, and returns an error starting with voidErrPrefix: the writer
// counts the publication dropped.
//
// KEYS: stream, dedup hash. ARGV: pub/sub channel, MAXLEN, TTL in ms, envelope
// head (up to the offset field), data, origin, "epoch:stream", seq, void
// envelope.
var publishScript = redis.NewScript(`
local tag = ARGV[6] .. '|' .. ARGV[7] .. '|' .. ARGV[8]
local function find()
  local from, seen = '+', 0
  while seen < ` + dupScanLua + ` do
    local es = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT', 128)
    if #es == 0 then return nil end
    for _, e in ipairs(es) do
      if e[1] ~= from then
        local f = e[2]
        for i = 1, #f, 2 do
          if f[i] == 's' and f[i + 1] == tag then return e[1] end
        end
        seen = seen + 1
      end
    end
    if #es < 128 then return nil end
    from = es[#es][1]
  end
  return nil
end
local function store()
  local last = redis.call('HGET', KEYS[2], ARGV[6])
  if last then
    local inc, n = string.match(last, '^(.*):(%d+)$')
    if inc == ARGV[7] and tonumber(n) >= tonumber(ARGV[8]) then return false, find() end
  end
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  local prev = ''
  if top[1] then prev = top[1][1] end
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'd', ARGV[5], 'p', prev, 's', tag)
  redis.call('HSET', KEYS[2], ARGV[6], ARGV[7] .. ':' .. ARGV[8])
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
  return true, id
end
local ok, stored, id = pcall(store)
if not ok then
  redis.call('PUBLISH', ARGV[1], ARGV[9])
  return redis.error_reply('` + voidErrPrefix + ` ' .. tostring(stored and (stored.err or stored) or 'error'))
end
id = id or ''
redis.call('PUBLISH', ARGV[1], ARGV[4] .. string.len(id) .. ':' .. id .. ARGV[5])
if stored then return id end
return 0
`)

// dupScan bounds how far back the script looks for the entry of a
// publication sent twice. It only runs after an ambiguous failure, for the
// few publications that were in flight.
const (
	dupScan    = 4096
	dupScanLua = "4096"
)

// voidErrPrefix starts the error of a history publication the script could
// not store (it published a void instead).
const voidErrPrefix = "SHARDHUB_VOID"

// Hold subscribes this instance to channel, apart from the engine's own
// subscription, and returns once Redis confirmed it: every publication after
// that reaches the engine. release reports whether the connection stayed up.
func (b *Broker) Hold(ctx context.Context, channel string) (release func() (intact bool), err error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	rc := b.names.ch + channel
	s := b.subFor(rc)
	gen, err := s.hold(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("redisbroker: subscribing %q: %w", channel, err)
	}
	return func() bool {
		ok := s.intact(gen)
		s.remove(rc, false)
		return ok
	}, nil
}

// History returns channel's publications after since, oldest first, once every
// publication the read saw has been handed to HandlePublication (call it while
// holding the channel, see Hold): a publication still in flight on the
// subscriber connection would otherwise reach the engine after the recovery's
// seam and be delivered twice. ok is
// false when the stream no longer reaches back to since: it expired or never
// existed (Redis restarted without persistence, TTL passed), or entries after
// since were trimmed.
//
// Since is recoverable when it is not newer than the stream's last id and is
// either not older than its first retained entry (trimming only removes the
// oldest, so everything after since is there) or is that entry's recorded
// predecessor (the client saw exactly the entry trimmed last). Stream ids grow
// with time, so an offset from before a restart is older than everything in
// the new stream, whose first entry has no predecessor: both tests fail.
func (b *Broker) History(ctx context.Context, channel, since string) (pubs []engine.Publication, ok bool, err error) {
	if err := b.usable(); err != nil {
		return nil, false, err
	}
	r := b.cfg.rule(channel)
	if r == nil {
		return nil, false, nil
	}
	key := b.names.hist + channel
	// The marker, published in the same transaction as the read, comes back
	// through this instance's subscription after every publication the read
	// saw: waiting for it means all of them have reached HandlePublication.
	rc := b.names.ch + channel
	token := strconv.FormatUint(b.markerSeq.Add(1), 10)
	seen := make(chan struct{})
	b.markers.Store(token, seen)
	defer b.markers.Delete(token)
	var info *redis.XInfoStreamCmd
	var rng *redis.XMessageSliceCmd
	_, err = b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		info = p.XInfoStream(ctx, key)
		rng = p.XRangeN(ctx, key, since, "+", int64(r.Size)+1)
		p.Publish(ctx, rc, encode(kindProbe, b.id, []byte(token)))
		return nil
	})
	if ierr := info.Err(); ierr != nil {
		if strings.Contains(ierr.Error(), "no such key") {
			return nil, false, nil
		}
		return nil, false, ierr
	}
	if err != nil {
		return nil, false, err
	}
	st := info.Val()
	last, first := st.LastGeneratedID, st.FirstEntry.ID
	prev, _ := st.FirstEntry.Values["p"].(string)
	switch {
	case engine.CompareOffsets(since, last) > 0:
		return nil, false, nil
	case st.Length == 0:
		return nil, since == last, nil
	case engine.CompareOffsets(since, first) >= 0:
	case prev != "" && since == prev:
	default:
		return nil, false, nil
	}
	select {
	case <-seen:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("redisbroker: history of %q: publications in flight did not arrive: %w", channel, ctx.Err())
	}
	for _, m := range rng.Val() {
		if engine.CompareOffsets(m.ID, since) <= 0 {
			continue
		}
		d, _ := m.Values["d"].(string)
		pubs = append(pubs, engine.Publication{Offset: m.ID, Data: []byte(d)})
	}
	return pubs, true, nil
}
