package redisbroker

import (
	"errors"
	"strconv"
)

// The envelope is the payload of every pub/sub message:
//
//	'2' kind field* data
//
// '2' is the format version; kind is one byte; each field is "<decimal
// length>:<bytes>"; data, the rest, is the message as given to the engine.
//
//	kind 'P' publication:  origin, epoch, stream, seq, offset ("" unless the channel keeps history)
//	kind 'B' broadcast:    origin, epoch, stream, seq
//	kind 'S' announcement: origin, epoch, stream, seq (no data): the publisher's
//	                       stream on this channel reached seq
//	kind 'V' void:         origin, epoch, stream, seq (no data): seq was not
//	                       published (the history script failed for good)
//	kind 'M' private:      origin, to, from
//	kind 'Q' probe/marker: origin (data is the probe's or History marker's token)
//	kind 'R' sync request: origin (no data): announce your streams (seq.go)
//
// The origin lets an instance skip its own messages. Epoch, stream and seq
// number the publications and broadcasts of one publisher on one Redis
// channel, so a receiver counts exactly what it missed and drops what it got
// twice (seq.go). The history script (history.go) appends the offset field
// itself, since only it knows the stream id: a textual length keeps that a
// string concatenation in Lua.
const envelopeVersion = '2'

// Envelope kinds.
const (
	kindPublication = 'P'
	kindBroadcast   = 'B'
	kindAnnounce    = 'S'
	kindVoid        = 'V'
	kindPrivate     = 'M'
	kindProbe       = 'Q'
	kindSync        = 'R'
)

var errBadEnvelope = errors.New("redisbroker: malformed envelope")

// envelope is a decoded pub/sub payload. Its strings alias the payload.
type envelope struct {
	kind                   byte
	origin, offset, to, by string // by: the sender of a private message
	epoch, stream, seq     uint64
	data                   string
}

// sequenced reports whether kind carries epoch, stream and seq.
func sequenced(kind byte) bool {
	switch kind {
	case kindPublication, kindBroadcast, kindAnnounce, kindVoid:
		return true
	}
	return false
}

func appendField(dst []byte, s string) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

func appendUintField(dst []byte, n uint64) []byte {
	var tmp [20]byte
	d := strconv.AppendUint(tmp[:0], n, 10)
	dst = strconv.AppendInt(dst, int64(len(d)), 10)
	dst = append(dst, ':')
	return append(dst, d...)
}

// appendSeqHead appends the head of a sequenced envelope: version, kind,
// origin, epoch, stream and seq. A publication continues with its offset
// field.
func appendSeqHead(dst []byte, kind byte, origin string, epoch, stream, seq uint64) []byte {
	dst = append(dst, envelopeVersion, kind)
	dst = appendField(dst, origin)
	dst = appendUintField(dst, epoch)
	dst = appendUintField(dst, stream)
	return appendUintField(dst, seq)
}

// maxSeqHead is the longest head appendSeqHead writes for origin, plus an
// empty offset field.
func maxSeqHead(origin string) int {
	return 2 + len(strconv.Itoa(len(origin))) + 1 + len(origin) + 3*(2+1+20) + 2
}

// encode returns a whole envelope of an unsequenced kind.
func encode(kind byte, origin string, data []byte, fields ...string) []byte {
	n := 2 + len(origin) + 4 + len(data)
	for _, f := range fields {
		n += len(f) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, envelopeVersion, kind)
	b = appendField(b, origin)
	for _, f := range fields {
		b = appendField(b, f)
	}
	return append(b, data...)
}

func readField(p string) (field, rest string, err error) {
	n := 0
	for i := 0; i < len(p) && i < 10; i++ {
		c := p[i]
		if c == ':' {
			if i == 0 || len(p)-i-1 < n {
				return "", "", errBadEnvelope
			}
			return p[i+1 : i+1+n], p[i+1+n:], nil
		}
		if c < '0' || c > '9' {
			return "", "", errBadEnvelope
		}
		n = n*10 + int(c-'0')
	}
	return "", "", errBadEnvelope
}

func readUintField(p string) (n uint64, rest string, err error) {
	f, rest, err := readField(p)
	if err != nil {
		return 0, "", err
	}
	if f == "" || len(f) > 20 {
		return 0, "", errBadEnvelope
	}
	if n, err = strconv.ParseUint(f, 10, 64); err != nil {
		return 0, "", errBadEnvelope
	}
	return n, rest, nil
}

// decode parses a payload. It does not allocate: the envelope's strings alias
// p.
func decode(p string) (envelope, error) {
	var e envelope
	if len(p) < 2 || p[0] != envelopeVersion {
		return e, errBadEnvelope
	}
	e.kind = p[1]
	rest := p[2:]
	var err error
	if e.origin, rest, err = readField(rest); err != nil {
		return e, err
	}
	if sequenced(e.kind) {
		if e.epoch, rest, err = readUintField(rest); err != nil {
			return e, err
		}
		if e.stream, rest, err = readUintField(rest); err != nil {
			return e, err
		}
		if e.seq, rest, err = readUintField(rest); err != nil {
			return e, err
		}
		if e.seq == 0 {
			return e, errBadEnvelope // sequences start at 1
		}
	}
	switch e.kind {
	case kindPublication:
		e.offset, rest, err = readField(rest)
	case kindPrivate:
		if e.to, rest, err = readField(rest); err == nil {
			e.by, rest, err = readField(rest)
		}
	case kindBroadcast, kindProbe, kindAnnounce, kindVoid, kindSync:
	default:
		return e, errBadEnvelope
	}
	if err != nil {
		return e, err
	}
	e.data = rest
	return e, nil
}
