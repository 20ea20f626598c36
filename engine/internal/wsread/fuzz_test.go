package wsread

import (
	"errors"
	"testing"
)

// FuzzParser feeds arbitrary bytes, whole and in chunks whose sizes come from
// the input too: the parser must never panic, and the chunking must never
// change what it reports (the same events, the same error).
func FuzzParser(f *testing.F) {
	f.Add([]byte{0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4}, uint8(3))
	f.Add(clientFrame(true, OpText, []byte(`{"type":"subscribe","channel":"a"}`)), uint8(1))
	f.Add(cat(clientFrame(false, OpText, []byte("he")), clientFrame(true, OpPing, nil), clientFrame(true, OpContinuation, []byte("y"))), uint8(5))
	f.Add(clientFrame(true, OpClose, closePayload(1000, "bye")), uint8(2))
	f.Add(clientFrame(true, OpBinary, make([]byte, 300)), uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		const max = 1 << 12
		whole, werr := feedChunks(t, in, max)
		step := int(chunk%16) + 1
		parts, perr := feedChunks(t, in, max, step)
		if !equal(whole, parts) {
			t.Fatalf("events differ: whole %q, in chunks of %d %q", short(whole), step, short(parts))
		}
		var we, pe *Error
		if errors.As(werr, &we) != errors.As(perr, &pe) || (we != nil && we != pe) {
			t.Fatalf("errors differ: whole %v, chunks of %d %v", werr, step, perr)
		}
		if werr != nil && (we == nil || !ValidCloseCode(we.Code)) {
			t.Fatalf("error without a valid close code: %v", werr)
		}
	})
}
