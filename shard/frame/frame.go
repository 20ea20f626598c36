// Package frame holds pre-encoded WebSocket frames in pooled, reference-counted
// buffers, so a message fanned out to many connections is encoded exactly once and
// its memory returns to the pool when the last write of it finishes.
//
// A Frame is safe for concurrent use by the goroutines that hold references to it:
// the bytes are immutable between Seal and the final Release.
package frame

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Opcode is a WebSocket frame opcode (RFC 6455 §5.2).
type Opcode byte

// Opcodes used by the engine.
const (
	OpText   Opcode = 0x1
	OpBinary Opcode = 0x2
	OpClose  Opcode = 0x8
	OpPing   Opcode = 0x9
	OpPong   Opcode = 0xA
)

// MaxHeaderLen is the longest header of an unmasked (server to client) frame.
const MaxHeaderLen = 10

// sizeClasses are the pooled buffer capacities. A frame larger than the last class
// is allocated and left to the garbage collector: such frames are rare and pooling
// them would pin large buffers.
var sizeClasses = [...]int{256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10}

var pools [len(sizeClasses)]sync.Pool

func classFor(n int) int {
	for i, c := range sizeClasses {
		if n <= c {
			return i
		}
	}
	return -1
}

// Frame is one complete WebSocket frame (header and payload) shared by every
// connection it is written to.
type Frame struct {
	buf   []byte
	hdr   int          // header bytes reserved at the front of buf
	start int          // index of the first header byte after Seal
	refs  atomic.Int32 // references held; the frame returns to its pool at zero
	class int8         // size class index, noPool or static when not pooled
	msg   bool         // a message the ledger counts (SetMessage), not a protocol frame
}

const (
	noPool int8 = -1 // allocated outside the pools, left to the garbage collector
	static int8 = -2 // shared forever; references are not counted
)

// New returns a frame with room for a payload of about payloadHint bytes and one
// reference held by the caller. Append the payload with Append or AppendBytes, then
// call Seal before sharing it.
func New(payloadHint int) *Frame {
	need := payloadHint + MaxHeaderLen
	class := classFor(need)
	var f *Frame
	if class >= 0 {
		if v := pools[class].Get(); v != nil {
			f = v.(*Frame)
		} else {
			f = &Frame{buf: make([]byte, 0, sizeClasses[class]), class: int8(class)}
		}
	} else {
		f = &Frame{buf: make([]byte, 0, need), class: noPool}
	}
	f.buf = f.buf[:MaxHeaderLen]
	f.hdr = MaxHeaderLen
	f.start = 0
	f.msg = false
	f.refs.Store(1)
	return f
}

// SetMessage marks the frame as a message (a broadcast, publication or private
// message) rather than a protocol frame (a reply, a pong, a close): the shards'
// delivery ledger counts what becomes of every message frame. Call it before
// sharing the frame.
func (f *Frame) SetMessage() *Frame {
	f.msg = true
	return f
}

// IsMessage reports whether SetMessage was called.
func (f *Frame) IsMessage() bool { return f.msg }

// Payload returns the payload written so far; callers append to it and store the
// result back with SetPayload. It lets encoders use append-style helpers without
// an intermediate buffer.
func (f *Frame) Payload() []byte { return f.buf[f.hdr:] }

// SetPayload stores p, which must be Payload() with bytes appended, as the payload.
func (f *Frame) SetPayload(p []byte) {
	if cap(f.buf) > f.hdr && unsafe.SliceData(p) == unsafe.SliceData(f.buf[f.hdr:]) {
		f.buf = f.buf[:f.hdr+len(p)]
		return
	}
	// append reallocated: copy into a buffer that keeps the header room.
	nb := make([]byte, f.hdr+len(p), f.hdr+cap(p))
	copy(nb[f.hdr:], p)
	f.buf = nb
	f.class = noPool
}

// AppendBytes appends b to the payload.
func (f *Frame) AppendBytes(b []byte) { f.SetPayload(append(f.Payload(), b...)) }

// Seal writes the frame header for opcode in front of the payload. After Seal the
// frame is immutable and may be shared.
func (f *Frame) Seal(op Opcode) *Frame {
	n := len(f.buf) - f.hdr
	var h [MaxHeaderLen]byte
	hl := PutHeader(h[:], op, n)
	f.start = f.hdr - hl
	copy(f.buf[f.start:], h[:hl])
	return f
}

// Copy returns a frame holding a copy of b, which is already one or more complete
// encoded frames (built by another WebSocket library), with one reference held by
// the caller.
func Copy(b []byte) *Frame {
	f := New(len(b))
	f.SetPayload(append(f.Payload(), b...))
	f.start = f.hdr
	return f
}

// Bytes returns the encoded frame. The slice must not be modified.
func (f *Frame) Bytes() []byte { return f.buf[f.start:] }

// Len returns the encoded frame length in bytes.
func (f *Frame) Len() int { return len(f.buf) - f.start }

// Retain adds n references.
func (f *Frame) Retain(n int32) {
	if f.class != static {
		f.refs.Add(n)
	}
}

// Release drops one reference; the last one returns the frame to its pool.
func (f *Frame) Release() { f.ReleaseN(1) }

// ReleaseN drops n references at once.
func (f *Frame) ReleaseN(n int32) {
	if f.class == static {
		return
	}
	r := f.refs.Add(-n)
	if r > 0 {
		return
	}
	if r < 0 {
		panic("frame: released more times than retained")
	}
	if f.class >= 0 && int(f.class) < len(pools) {
		f.buf = f.buf[:0]
		pools[f.class].Put(f)
	}
}

// Refs reports the references currently held (for tests and leak checks).
func (f *Frame) Refs() int32 { return f.refs.Load() }

// PutHeader writes the header of an unmasked final frame with opcode op and a
// payload of n bytes into dst (at least MaxHeaderLen long) and returns its length.
func PutHeader(dst []byte, op Opcode, n int) int {
	dst[0] = 0x80 | byte(op)
	switch {
	case n < 126:
		dst[1] = byte(n)
		return 2
	case n <= 0xFFFF:
		dst[1] = 126
		binary.BigEndian.PutUint16(dst[2:], uint16(n))
		return 4
	default:
		dst[1] = 127
		binary.BigEndian.PutUint64(dst[2:], uint64(n))
		return 10
	}
}

// Static returns a sealed frame that is never returned to a pool, for frames sent
// over and over (pings, fixed close frames). Retain and Release on it do nothing.
func Static(op Opcode, payload []byte) *Frame {
	f := &Frame{buf: make([]byte, MaxHeaderLen, MaxHeaderLen+len(payload)), hdr: MaxHeaderLen, class: static}
	f.buf = append(f.buf, payload...)
	f.refs.Store(1)
	return f.Seal(op)
}

// Close returns a sealed close frame carrying code and reason (truncated to fit
// the 125-byte control frame limit), with one reference held by the caller.
func Close(code uint16, reason string) *Frame {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	f := New(2 + len(reason))
	p := f.Payload()
	p = binary.BigEndian.AppendUint16(p, code)
	p = append(p, reason...)
	f.SetPayload(p)
	return f.Seal(OpClose)
}
