// Package wsread parses the client-to-server half of RFC 6455: a push parser
// that is fed whatever bytes the socket had and calls back for each complete
// message and control frame.
//
// It is the engine's own because the read side must work without a goroutine
// per connection: the engine's reactor reads a socket only when it is readable
// and hands the bytes here, so the parser keeps its state between calls instead
// of blocking on an io.Reader as gws's reader does. It also validates every
// header field before anything is sized from it (gws v1.8.9 trusts the 64-bit
// length and panics on one 14-byte frame: docs/security.md).
//
// An idle parser holds no buffer: a frame that arrives whole is handled in the
// caller's buffer, in place; only a frame split across reads, or a message split
// into fragments, borrows a pooled buffer until it is complete.
package wsread

import (
	"encoding/binary"
	"unicode/utf8"
)

// Opcodes (RFC 6455 §5.2).
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Close codes the parser fails a connection with (RFC 6455 §7.4.1).
const (
	CloseProtocolError  uint16 = 1002
	CloseInvalidPayload uint16 = 1007
	CloseTooBig         uint16 = 1009
)

// maxControlPayload is the longest control frame payload (RFC 6455 §5.5).
const maxControlPayload = 125

// Error is a violation of the protocol by the peer: the connection must be
// failed with close code Code. Reason is safe to send to the peer.
type Error struct {
	Code   uint16
	Reason string
}

func (e *Error) Error() string { return "wsread: " + e.Reason }

// The errors Feed returns; compare with errors.Is or by Code.
var (
	ErrReservedBits   = &Error{CloseProtocolError, "reserved bits set"}
	ErrReservedOpcode = &Error{CloseProtocolError, "reserved opcode"}
	ErrUnmasked       = &Error{CloseProtocolError, "client frame not masked"}
	ErrControlLength  = &Error{CloseProtocolError, "control frame too long"}
	ErrControlFragm   = &Error{CloseProtocolError, "fragmented control frame"}
	ErrLengthTopBit   = &Error{CloseProtocolError, "payload length has its top bit set"}
	ErrLengthEncoding = &Error{CloseProtocolError, "payload length not minimally encoded"}
	ErrContinuation   = &Error{CloseProtocolError, "continuation frame without a message to continue"}
	ErrInterleaved    = &Error{CloseProtocolError, "new message before the fragmented one ended"}
	ErrCloseLength    = &Error{CloseProtocolError, "close frame with a 1-byte payload"}
	ErrCloseCode      = &Error{CloseProtocolError, "invalid close code"}
	ErrCloseReason    = &Error{CloseInvalidPayload, "close reason is not valid UTF-8"}
	ErrInvalidUTF8    = &Error{CloseInvalidPayload, "text message is not valid UTF-8"}
	ErrTooBig         = &Error{CloseTooBig, "message too big"}
)

// Handler receives what Feed parses, on Feed's goroutine. The payload slices
// are valid only during the call (they point into the caller's buffer or a
// pooled one). Returning false stops Feed at once: the rest of the input is
// not parsed (the connection was condemned).
type Handler interface {
	// OnFrame is told about every complete frame before it is handled (data,
	// continuation and control frames alike; n is its payload length): it is
	// where a budget is charged per frame. Returning false stops Feed.
	OnFrame(op byte, n int) bool
	// OnMessage receives a complete data message: op is OpText (payload is
	// valid UTF-8) or OpBinary.
	OnMessage(op byte, payload []byte) bool
	// OnControl receives a ping, a pong or a close frame. A close payload has
	// been validated: empty, or a valid code followed by a UTF-8 reason.
	OnControl(op byte, payload []byte) bool
}

// Parser is the read state of one connection. The zero value is ready; it is
// not safe for concurrent use (one reader at a time owns it). Call Release
// when the connection ends, to return borrowed buffers.
type Parser struct {
	pend  []byte // an incomplete frame (header and the payload so far), or nil
	msg   []byte // the payload of the fragments of the current message so far, or nil
	msgOp byte   // opcode of the fragmented message; 0 when none is in progress
}

// Idle reports whether the parser holds no partial frame and no partial
// message (so it holds no buffer).
func (p *Parser) Idle() bool { return p.pend == nil && p.msgOp == 0 }

// Release returns the parser's buffers to the pool.
func (p *Parser) Release() {
	putBuf(p.pend)
	putBuf(p.msg)
	*p = Parser{}
}

// header is a parsed frame header.
type header struct {
	fin  bool
	op   byte
	mask [4]byte
	hlen int // header bytes
	plen int // payload bytes
}

// parseHeader decodes and validates the frame header at the start of b. It
// returns ok=false when b holds only part of it; every check that the bytes
// present allow is made before more are asked for. maxMsg bounds data payloads
// (together with what a fragmented message already holds).
func (p *Parser) parseHeader(b []byte, maxMsg int) (h header, ok bool, err *Error) {
	if len(b) < 2 {
		return h, false, nil
	}
	b0, b1 := b[0], b[1]
	h.fin = b0&0x80 != 0
	h.op = b0 & 0x0F
	if b0&0x70 != 0 {
		return h, false, ErrReservedBits // no extension is ever negotiated
	}
	control := h.op&0x08 != 0
	switch h.op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
	default:
		return h, false, ErrReservedOpcode
	}
	if b1&0x80 == 0 {
		return h, false, ErrUnmasked
	}
	code := int(b1 & 0x7F)
	if control {
		if !h.fin {
			return h, false, ErrControlFragm
		}
		if code > maxControlPayload {
			return h, false, ErrControlLength
		}
	}
	switch code {
	case 126:
		h.hlen = 2 + 2 + 4
		if len(b) < 4 {
			return h, false, nil
		}
		h.plen = int(binary.BigEndian.Uint16(b[2:4]))
		if h.plen < 126 {
			return h, false, ErrLengthEncoding
		}
	case 127:
		h.hlen = 2 + 8 + 4
		if len(b) < 3 {
			return h, false, nil
		}
		if b[2]&0x80 != 0 {
			return h, false, ErrLengthTopBit // RFC 6455 §5.2: the most significant bit MUST be 0
		}
		if len(b) < 10 {
			return h, false, nil
		}
		n := binary.BigEndian.Uint64(b[2:10])
		if n > uint64(maxMsg) {
			return h, false, ErrTooBig
		}
		h.plen = int(n)
		if h.plen <= 0xFFFF {
			return h, false, ErrLengthEncoding
		}
	default:
		h.hlen = 2 + 4
		h.plen = code
	}
	if !control && h.plen+len(p.msg) > maxMsg {
		return h, false, ErrTooBig
	}
	if len(b) < h.hlen {
		return h, false, nil
	}
	copy(h.mask[:], b[h.hlen-4:h.hlen])
	return h, true, nil
}

// Feed parses data, calling h for every complete message and control frame,
// and keeps what is incomplete for the next call. data is the caller's and is
// modified (unmasked in place). maxMsg is the largest message accepted: a
// longer one fails with ErrTooBig before its payload is read. After an error,
// or once h returned false, the parser must not be fed again. It reports
// whether h asked to go on.
func (p *Parser) Feed(data []byte, maxMsg int, h Handler) (bool, error) {
	if p.pend != nil {
		rest, done, more, err := p.completePending(data, maxMsg, h)
		if err != nil || !more {
			return more, errOrNil(err)
		}
		if !done {
			return true, nil
		}
		data = rest
	}
	for len(data) > 0 {
		hd, ok, err := p.parseHeader(data, maxMsg)
		if err != nil {
			return false, err
		}
		if !ok || len(data) < hd.hlen+hd.plen {
			p.pend = keep(data, hd, ok)
			return true, nil
		}
		frame := data[:hd.hlen+hd.plen]
		data = data[len(frame):]
		more, ferr := p.frame(hd, frame[hd.hlen:], maxMsg, h)
		if ferr != nil {
			return false, ferr
		}
		if !more {
			return false, nil
		}
	}
	return true, nil
}

// errOrNil keeps a nil *Error from becoming a non-nil error interface.
func errOrNil(err *Error) error {
	if err == nil {
		return nil
	}
	return err
}

// keep copies the start of an incomplete frame into a pooled buffer. Its size
// follows what has arrived, not what the header announces, so a peer that
// sends a header and stalls does not make the server reserve the whole
// payload.
func keep(b []byte, hd header, headerKnown bool) []byte {
	want := len(b) * 2
	if headerKnown {
		want = min(max(want, minBuf), hd.hlen+hd.plen)
	}
	buf := getBuf(max(want, len(b)))
	return append(buf, b...)
}

// completePending adds data to the pending frame. done reports that the frame
// was completed (and handled); rest is the data after it.
func (p *Parser) completePending(data []byte, maxMsg int, h Handler) (rest []byte, done, more bool, err *Error) {
	hd, ok, herr := p.parseHeader(p.pend, maxMsg)
	for !ok {
		if herr != nil {
			return nil, false, false, herr
		}
		if len(data) == 0 {
			return nil, false, true, nil
		}
		// The header is incomplete: move bytes over one at a time until it
		// parses (at most 13 of them).
		p.pend = append(p.pend, data[0])
		data = data[1:]
		hd, ok, herr = p.parseHeader(p.pend, maxMsg)
	}
	if herr != nil {
		return nil, false, false, herr
	}
	total := hd.hlen + hd.plen
	need := total - len(p.pend)
	if need > len(data) {
		p.pend = grow(p.pend, len(data), total)
		p.pend = append(p.pend, data...)
		return nil, false, true, nil
	}
	p.pend = grow(p.pend, need, total)
	p.pend = append(p.pend, data[:need]...)
	pend := p.pend
	p.pend = nil
	more, err = p.frame(hd, pend[hd.hlen:], maxMsg, h)
	putBuf(pend)
	return data[need:], true, more, err
}

// grow makes room for n more bytes in b, which will not need more than total.
func grow(b []byte, n, total int) []byte {
	if len(b)+n <= cap(b) {
		return b
	}
	nb := getBuf(min(max(2*cap(b), len(b)+n), total))
	nb = append(nb, b...)
	putBuf(b)
	return nb
}

// frame handles one complete frame whose (masked) payload is pl.
func (p *Parser) frame(hd header, pl []byte, maxMsg int, h Handler) (bool, *Error) {
	if !h.OnFrame(hd.op, len(pl)) {
		return false, nil
	}
	unmask(pl, hd.mask)
	switch hd.op {
	case OpPing, OpPong:
		return h.OnControl(hd.op, pl), nil
	case OpClose:
		if err := checkClose(pl); err != nil {
			return false, err
		}
		return h.OnControl(OpClose, pl), nil
	case OpContinuation:
		if p.msgOp == 0 {
			return false, ErrContinuation
		}
		if len(p.msg)+len(pl) > maxMsg {
			return false, ErrTooBig
		}
		p.msg = grow(p.msg, len(pl), maxMsg)
		p.msg = append(p.msg, pl...)
		if !hd.fin {
			return true, nil
		}
		msg, op := p.msg, p.msgOp
		p.msg, p.msgOp = nil, 0
		more, err := deliver(op, msg, h)
		putBuf(msg)
		return more, err
	default: // text, binary
		if p.msgOp != 0 {
			return false, ErrInterleaved
		}
		if hd.fin {
			return deliver(hd.op, pl, h)
		}
		p.msgOp = hd.op
		p.msg = append(getBuf(max(len(pl), minBuf)), pl...)
		return true, nil
	}
}

func deliver(op byte, msg []byte, h Handler) (bool, *Error) {
	if op == OpText && !utf8.Valid(msg) {
		return false, ErrInvalidUTF8
	}
	return h.OnMessage(op, msg), nil
}

// checkClose validates a close frame's payload (RFC 6455 §5.5.1, §7.4).
func checkClose(pl []byte) *Error {
	switch {
	case len(pl) == 0:
		return nil
	case len(pl) == 1:
		return ErrCloseLength
	}
	if !ValidCloseCode(binary.BigEndian.Uint16(pl)) {
		return ErrCloseCode
	}
	if !utf8.Valid(pl[2:]) {
		return ErrCloseReason
	}
	return nil
}

// ValidCloseCode reports whether a peer may send code in a close frame:
// 1000-1003 and 1007-1014 as defined (1004-1006 and 1015 are reserved for
// endpoints, never sent), and 3000-4999 for libraries and applications.
func ValidCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// CloseCode returns the code of a validated close payload, or 1005 (no status
// received) when it carries none.
func CloseCode(pl []byte) uint16 {
	if len(pl) < 2 {
		return 1005
	}
	return binary.BigEndian.Uint16(pl)
}

// unmask XORs b with the masking key, starting at key position 0.
func unmask(b []byte, key [4]byte) {
	if len(b) == 0 {
		return
	}
	k32 := binary.LittleEndian.Uint32(key[:])
	k64 := uint64(k32) | uint64(k32)<<32
	for len(b) >= 8 {
		v := binary.LittleEndian.Uint64(b)
		binary.LittleEndian.PutUint64(b, v^k64)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}
