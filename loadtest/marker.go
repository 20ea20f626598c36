package loadtest

import (
	"bytes"
	"strconv"
	"time"
)

// The marker is how a receiver recognises a load-test message inside whatever
// frame the server under test delivers. Every published payload carries, in a
// JSON string value,
//
//	LT1:<publisher>:<channel>:<seq>:<unix-nanos>
//
// for example {"lt":"LT1:0:3:1742:1718000000123456789","pad":"xxxx"}. Receivers do
// not decode JSON: they search the frame for the bytes "LT1:" and read four
// colon-separated decimal numbers after it. Digits, colons and ASCII letters are
// never escaped by JSON encoders, so the marker survives a server embedding the
// payload verbatim ({"type":"message","data":{…}}), re-encoding it as a JSON
// string ("{\"lt\":\"LT1:…\"}"), or relaying it as plain text or binary. It does
// not survive compression or base64 applied by the server.
var markerPrefix = []byte("LT1:")

// marker is one decoded load-test marker.
type marker struct {
	pub, ch uint32 // publisher (target index) and channel index
	seq     uint64 // 1-based sequence number within (pub, ch)
	ts      int64  // send time, Unix nanoseconds
}

// AppendPayload appends to dst a JSON payload of about size bytes (at least
// the marker's ~50) that a Fleet's connections recognise wherever the server
// puts it in the frames it delivers: message seq (1-based, counted per
// publisher and channel) of publisher on channel, sent now. The connections
// check each (publisher, channel) sequence for loss, duplicates and order, and
// record the latency from now to arrival.
func AppendPayload(dst []byte, publisher, channel uint32, seq uint64, size int) []byte {
	return appendPayload(dst, marker{pub: publisher, ch: channel, seq: seq, ts: time.Now().UnixNano()}, size)
}

// appendPayload appends a JSON payload of about size bytes carrying m.
func appendPayload(dst []byte, m marker, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"lt":"`...)
	dst = appendMarker(dst, m)
	dst = append(dst, '"')
	if pad := size - (len(dst) - start) - len(`,"pad":""}`); pad > 0 {
		dst = append(dst, `,"pad":"`...)
		for range pad {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

func appendMarker(dst []byte, m marker) []byte {
	dst = append(dst, markerPrefix...)
	dst = strconv.AppendUint(dst, uint64(m.pub), 10)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, uint64(m.ch), 10)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, m.seq, 10)
	dst = append(dst, ':')
	return strconv.AppendInt(dst, m.ts, 10)
}

// findMarker finds the first marker in frame. It does not allocate.
func findMarker(frame []byte) (marker, bool) {
	for {
		i := bytes.Index(frame, markerPrefix)
		if i < 0 {
			return marker{}, false
		}
		frame = frame[i+len(markerPrefix):]
		var f [4]uint64
		rest, ok := frame, true
		for k := range f {
			f[k], rest, ok = parseUint(rest)
			if !ok || (k < 3 && (len(rest) == 0 || rest[0] != ':')) {
				ok = false
				break
			}
			if k < 3 {
				rest = rest[1:]
			}
		}
		if ok && f[0] <= 1<<31 && f[1] <= 1<<31 && f[3] <= 1<<63-1 {
			return marker{pub: uint32(f[0]), ch: uint32(f[1]), seq: f[2], ts: int64(f[3])}, true
		}
	}
}

// parseUint reads a decimal number of 1 to 19 digits.
func parseUint(b []byte) (uint64, []byte, bool) {
	var v uint64
	n := 0
	for n < len(b) && n < 19 && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + uint64(b[n]-'0')
		n++
	}
	return v, b[n:], n > 0
}
