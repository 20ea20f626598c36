package redisbroker

import (
	"errors"
	"strconv"
)

// The envelope is the payload of every pub/sub message:
//
//	'1' kind field* data
//
// '1' is the format version; kind is one byte; each field is "<decimal
// length>:<bytes>"; data, the rest, is the message as given to the engine.
//
//	kind 'P' publication: origin, offset ("" unless the channel keeps history)
//	kind 'B' broadcast:   origin
//	kind 'M' private:     origin, to, from
//	kind 'Q' probe:       origin (data is the probe's sequence number)
//
// The history script (history.go) appends the offset field itself, since only
// it knows the stream id: a textual length keeps that a string concatenation
// in Lua. The origin lets an instance skip its own messages.
const envelopeVersion = '1'

// Envelope kinds.
const (
	kindPublication = 'P'
	kindBroadcast   = 'B'
	kindPrivate     = 'M'
	kindProbe       = 'Q'
)

var errBadEnvelope = errors.New("redisbroker: malformed envelope")

// envelope is a decoded pub/sub payload. Its strings and data alias the
// payload.
type envelope struct {
	kind                   byte
	origin, offset, to, by string // by: the sender of a private message
	data                   []byte
}

func appendField(dst []byte, s string) []byte {
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

// encodeHead returns the envelope up to (not including) the data.
func encodeHead(kind byte, origin string, fields ...string) []byte {
	n := 2 + len(origin) + 4
	for _, f := range fields {
		n += len(f) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, envelopeVersion, kind)
	b = appendField(b, origin)
	for _, f := range fields {
		b = appendField(b, f)
	}
	return b
}

// encode returns a whole envelope.
func encode(kind byte, origin string, data []byte, fields ...string) []byte {
	head := encodeHead(kind, origin, fields...)
	b := make([]byte, len(head), len(head)+len(data))
	copy(b, head)
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

// decode parses a payload.
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
	switch e.kind {
	case kindPublication:
		e.offset, rest, err = readField(rest)
	case kindPrivate:
		if e.to, rest, err = readField(rest); err == nil {
			e.by, rest, err = readField(rest)
		}
	case kindBroadcast, kindProbe:
	default:
		return e, errBadEnvelope
	}
	if err != nil {
		return e, err
	}
	e.data = []byte(rest)
	return e, nil
}
