package loadtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"
)

// The RFC 6455 framing shared by both ways of reading a connection: the
// header decoder and the masked-frame encoder serve the blocking reader
// (wsConn.next) and the incremental one (frameReader) alike, so a server's
// frames are accepted or refused the same way whichever reads them.

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxFrame bounds one inbound message (a frame, or a message reassembled
// from fragments), so a broken server cannot make the load generator
// allocate without limit.
const maxFrame = 16 << 20

// maxHeader is the longest frame header: 2 bytes, a 64-bit length, a mask.
const maxHeader = 14

// Frame errors: the server broke the protocol. They end the connection and
// count as read_other.
var (
	errReservedBits    = errors.New("frame with reserved bits set (no extension was negotiated)")
	errBadControl      = errors.New("control frame fragmented or longer than 125 bytes")
	errOrphanCont      = errors.New("continuation frame without a message")
	errInterleavedData = errors.New("data frame inside a fragmented message")
	// errWriteBlocked ends a connection whose server stopped reading the
	// control frames (pongs) the load generator owes it.
	errWriteBlocked = errors.New("the server does not read: pongs pile up")
)

// frameHeader is a decoded frame header.
type frameHeader struct {
	fin    bool
	op     byte
	masked bool
	mask   [4]byte
	hl     int // header length in bytes
	n      int // payload length, at most maxFrame
}

// decodeHeader decodes the frame header at the start of b. ok is false when b
// holds less than the whole header; h.hl then says how long it is once b has
// its first two bytes. A header the load generator refuses
// (reserved bits, an unknown opcode, a bad control frame, a payload over
// maxFrame) is an error, found before any buffer is sized from it.
func decodeHeader(b []byte) (h frameHeader, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.fin, h.op = b[0]&0x80 != 0, b[0]&0x0F
	h.masked = b[1]&0x80 != 0
	if b[0]&0x70 != 0 {
		return h, false, errReservedBits
	}
	switch h.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin || b[1]&0x7F > 125 {
			return h, false, errBadControl
		}
	default:
		return h, false, fmt.Errorf("unknown opcode %d", h.op)
	}
	n7 := uint64(b[1] & 0x7F)
	h.hl = 2
	switch n7 {
	case 126:
		h.hl = 4
	case 127:
		h.hl = 10
	}
	if h.masked {
		h.hl += 4
	}
	if len(b) < h.hl {
		return h, false, nil
	}
	n := n7
	switch n7 {
	case 126:
		n = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		n = binary.BigEndian.Uint64(b[2:10])
	}
	if n > maxFrame {
		return h, false, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	h.n = int(n)
	if h.masked {
		copy(h.mask[:], b[h.hl-4:h.hl])
	}
	return h, true, nil
}

// closeCode is the status code of a close frame's payload: 1005 (no status)
// when it carries none.
func closeCode(p []byte) int {
	if len(p) >= 2 {
		return int(binary.BigEndian.Uint16(p))
	}
	return 1005
}

// closeEcho is the payload that answers a close frame of code: the code
// alone, or nothing for 1005, which must not be sent (RFC 6455 §7.4.1).
func closeEcho(code int, buf *[2]byte) []byte {
	if code == 1005 {
		return nil
	}
	binary.BigEndian.PutUint16(buf[:], uint16(code))
	return buf[:]
}

// appendClientFrame appends one masked, final client frame (RFC 6455 §5.3).
func appendClientFrame(b []byte, op byte, p []byte) []byte {
	b = append(b, 0x80|op)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], mrand.Uint32())
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, p...)
	maskBytes(b[start:], mask)
	return b
}

// maskBytes XORs p with the 4-byte key, eight bytes at a time.
func maskBytes(p []byte, key [4]byte) {
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k64)
	}
	for ; i < len(p); i++ {
		p[i] ^= key[i&3]
	}
}

// nowNanos is the arrival time of what a read returned, in Unix nanoseconds.
func nowNanos() int64 { return time.Now().UnixNano() }

// frameConn is a connection as a frameReader drives it: where bytes come
// from, where messages go, and how control frames are answered. Its methods
// are called from the goroutine that owns the reader.
type frameConn interface {
	// read reads what the socket has into p, as read(2) does: (0, io.EOF)
	// at the end of the stream.
	read(p []byte) (int, error)
	// message takes one complete text or binary message, which arrived at
	// now (Unix nanoseconds). p is valid only during the call.
	message(p []byte, now int64)
	// writeFrame sends one masked frame (a pong, the close echo).
	writeFrame(op byte, p []byte) error
}

// frameReader is the incremental RFC 6455 reader of one connection whose
// bytes arrive in reads of any size (the epoll fleet). Frames are parsed in
// place in the caller's read buffer; between reads a connection keeps only
// the bytes of an incomplete frame (part, from partPool) and of a message
// still being reassembled from fragments (frag). An idle connection keeps
// neither. Owned by one goroutine at a time.
type frameReader struct {
	part   *partBuf // an incomplete frame carried to the next read; nil when none
	need   int      // the whole length of that frame once its header is known; 0 before
	frag   []byte   // the fragmented message being reassembled; nil when none
	fragOp byte     // its opcode; 0 when none
}

// readOnce makes one read from c into buf (or, while a frame larger than buf
// is incomplete, straight into that frame's buffer), delivers every message it
// completes, answers pings and echoes a close, and keeps an incomplete frame
// for the next call. more says the read filled the space it was given, so the
// socket may hold more. A close frame ends the connection with a closeError.
func (r *frameReader) readOnce(c frameConn, buf []byte) (more bool, err error) {
	if r.need > len(buf) { // a large frame: read it where it will be parsed
		p := r.part.b
		n, err := c.read(p[len(p):r.need])
		if n <= 0 {
			return false, err
		}
		r.part.b = p[:len(p)+n]
		if len(r.part.b) < r.need {
			return true, nil
		}
		whole := r.part
		r.part, r.need = nil, 0
		err = r.consume(whole.b, c, nowNanos(), len(buf))
		putPart(whole)
		return true, err
	}
	off := 0
	if r.part != nil {
		off = copy(buf, r.part.b)
	}
	n, err := c.read(buf[off:])
	if n <= 0 {
		return false, err // an incomplete frame at the end of the stream is lost with it
	}
	if r.part != nil {
		putPart(r.part)
		r.part, r.need = nil, 0
	}
	return off+n == len(buf), r.consume(buf[:off+n], c, nowNanos(), len(buf))
}

// consume parses the frames of data, which starts at a frame boundary, and
// keeps the incomplete frame at its end (if any) for the next read. bufLen is
// the size of the reads' buffer: a frame longer than that gets a buffer of
// its own.
func (r *frameReader) consume(data []byte, c frameConn, now int64, bufLen int) error {
	for len(data) > 0 {
		h, ok, err := decodeHeader(data)
		if err != nil {
			return err
		}
		if !ok || len(data) < h.hl+h.n {
			need := 0
			if ok {
				need = h.hl + h.n
			}
			r.keep(data, need, bufLen)
			return nil
		}
		p := data[h.hl : h.hl+h.n]
		data = data[h.hl+h.n:]
		if err := r.frame(h, p, c, now); err != nil {
			return err
		}
	}
	return nil
}

// frame handles one complete frame whose payload p lies in the read buffer.
func (r *frameReader) frame(h frameHeader, p []byte, c frameConn, now int64) error {
	if h.masked {
		// Servers must not mask (RFC 6455 §5.1); unmask anyway rather than fail.
		maskBytes(p, h.mask)
	}
	switch h.op {
	case opPing:
		return c.writeFrame(opPong, p)
	case opPong:
		return nil
	case opClose:
		code := closeCode(p)
		var echo [2]byte
		_ = c.writeFrame(opClose, closeEcho(code, &echo))
		return closeError{code: code}
	case opText, opBinary:
		if r.fragOp != 0 {
			return errInterleavedData
		}
		if h.fin {
			c.message(p, now)
			return nil
		}
		r.fragOp = h.op
		r.frag = append([]byte(nil), p...)
		return nil
	default: // opContinuation: decodeHeader refused every other opcode
		if r.fragOp == 0 {
			return errOrphanCont
		}
		if len(r.frag)+len(p) > maxFrame {
			return fmt.Errorf("fragmented message exceeds %d bytes", maxFrame)
		}
		r.frag = append(r.frag, p...)
		if !h.fin {
			return nil
		}
		msg := r.frag
		r.frag, r.fragOp = nil, 0
		c.message(msg, now)
		return nil
	}
}

// keep stores tail, the start of a frame need bytes long (0: its header is
// still incomplete), until the next read. A frame longer than the read buffer
// gets a buffer of its whole length, which the next reads fill in place.
func (r *frameReader) keep(tail []byte, need, bufLen int) {
	size := len(tail)
	if need > bufLen {
		size = need
	}
	r.part = getPart(size)
	r.part.b = append(r.part.b[:0], tail...)
	r.need = need
}

// release returns the buffers of a connection that is closing.
func (r *frameReader) release() {
	if r.part != nil {
		putPart(r.part)
	}
	*r = frameReader{}
}

// partBuf holds the bytes of an incomplete frame.
type partBuf struct{ b []byte }

// Incomplete frames are held in buffers of power-of-two sizes from
// minPart to maxPooledPart bytes, pooled per size; longer frames get a
// buffer of their own, left to the garbage collector.
const (
	minPartShift  = 6 // 64 bytes
	maxPartShift  = 16
	maxPooledPart = 1 << maxPartShift
)

var partPools [maxPartShift - minPartShift + 1]sync.Pool

// partClass returns the pool index for a buffer of n bytes, or -1 when n is
// past the largest pooled size.
func partClass(n int) int {
	for k := range len(partPools) {
		if n <= 1<<(minPartShift+k) {
			return k
		}
	}
	return -1
}

func getPart(n int) *partBuf {
	k := partClass(n)
	if k < 0 {
		return &partBuf{b: make([]byte, 0, n)}
	}
	if p, _ := partPools[k].Get().(*partBuf); p != nil {
		return p
	}
	return &partBuf{b: make([]byte, 0, 1<<(minPartShift+k))}
}

func putPart(p *partBuf) {
	c := cap(p.b)
	if k := partClass(c); k >= 0 && c == 1<<(minPartShift+k) {
		p.b = p.b[:0]
		partPools[k].Put(p)
	}
}
