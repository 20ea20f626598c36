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
// tag (field s: "<origin>|<epoch>:<stream>|<seq>").
//
// The writer sends a publication again after an ambiguous failure (a
// timeout: Redis may have run it, perhaps while the subscribers were
// reconnecting), and says so (ARGV[8] = 1). Only then does the script look
// for the entry, scanning back from the newest by tag: found, it publishes
// it again with its offset, for the subscribers that missed it (those that
// have it drop the copy, seq.go), and stores nothing; an entry of the same
// stream with a lower number first means it was never stored: it is stored
// now; reaching the oldest entry having passed higher numbers of the stream
// means it was stored and trimmed since: it is published without offset.
// Streams of one publisher are stored in order (one writer, one connection at
// a time, a pipeline in order), which is what makes these answers exact. The
// scan stops after dupScan entries (then it is stored).
//
// If storing fails for good (out of memory, a key of the wrong type), the
// script publishes a void in the publication's place, so receivers see no
// hole in the sequence, and returns an error starting with voidErrPrefix: the
// writer counts the publication dropped.
//
// KEYS: stream. ARGV: pub/sub channel, MAXLEN, TTL in ms, envelope head (up to
// the offset field: version, kind, origin, epoch, stream, seq; the void is the
// same with kind V), data, tag prefix ("<origin>|<epoch>:<stream>|"), seq,
// resend (0 or 1).
var publishScript = redis.NewScript(`
local pfx, seq = ARGV[6], tonumber(ARGV[7])
local tag = pfx .. ARGV[7]
local function find()
  local from, seen, higher = '+', 0, false
  while seen < ` + dupScanLua + ` do
    local es = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT', 64)
    local fresh = 0
    for _, e in ipairs(es) do
      if e[1] ~= from then
        fresh = fresh + 1
        seen = seen + 1
        local f = e[2]
        for i = 1, #f, 2 do
          if f[i] == 's' then
            local t = f[i + 1]
            if t == tag then return 'dup', e[1] end
            if string.sub(t, 1, #pfx) == pfx then
              if tonumber(string.sub(t, #pfx + 1)) < seq then return 'new' end
              higher = true
            end
          end
        end
      end
    end
    if fresh == 0 then break end
    from = es[#es][1]
  end
  if higher and seen < ` + dupScanLua + ` then return 'trimmed' end
  return 'new'
end
local function store()
  if ARGV[8] == '1' then
    local what, id = find()
    if what ~= 'new' then return false, id end
  end
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  local prev = ''
  if top[1] then prev = top[1][1] end
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'd', ARGV[5], 'p', prev, 's', tag)
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  return true, id
end
local ok, stored, id = pcall(store)
if not ok then
  redis.call('PUBLISH', ARGV[1], '` + string(envelopeVersion) + string(kindVoid) + `' .. string.sub(ARGV[4], 3))
  return redis.error_reply('` + voidErrPrefix + ` ' .. tostring(stored and (stored.err or stored) or 'error'))
end
id = id or ''
redis.call('PUBLISH', ARGV[1], ARGV[4] .. string.len(id) .. ':' .. id .. ARGV[5])
if stored then return id end
return 0
`)

// voidErrPrefix starts the error of a history publication the script could
// not store (it published a void instead).
const voidErrPrefix = "SHARDHUB_VOID"

// dupScan bounds how far back the script looks for the entry of a
// publication sent again. It only runs for the few publications that were in
// flight when a command timed out.
const dupScanLua = "4096"

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
