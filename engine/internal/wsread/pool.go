package wsread

import "sync"

// minBuf is the smallest buffer lent for a partial frame or message.
const minBuf = 512

// The pools hold fixed-size arrays rather than slices: putting a slice in a
// sync.Pool allocates its header on every Put, an array pointer does not.
// Classes are powers of two, so a buffer is never more than twice what it
// holds. Buffers over 256 KiB (partial messages that large are rare) are
// allocated and left to the garbage collector.
var (
	pool512  = sync.Pool{New: func() any { return new([512]byte) }}
	pool1k   = sync.Pool{New: func() any { return new([1 << 10]byte) }}
	pool2k   = sync.Pool{New: func() any { return new([2 << 10]byte) }}
	pool4k   = sync.Pool{New: func() any { return new([4 << 10]byte) }}
	pool8k   = sync.Pool{New: func() any { return new([8 << 10]byte) }}
	pool16k  = sync.Pool{New: func() any { return new([16 << 10]byte) }}
	pool32k  = sync.Pool{New: func() any { return new([32 << 10]byte) }}
	pool64k  = sync.Pool{New: func() any { return new([64 << 10]byte) }}
	pool128k = sync.Pool{New: func() any { return new([128 << 10]byte) }}
	pool256k = sync.Pool{New: func() any { return new([256 << 10]byte) }}
)

// getBuf returns an empty buffer with room for at least n bytes.
func getBuf(n int) []byte {
	switch {
	case n <= 512:
		return pool512.Get().(*[512]byte)[:0]
	case n <= 1<<10:
		return pool1k.Get().(*[1 << 10]byte)[:0]
	case n <= 2<<10:
		return pool2k.Get().(*[2 << 10]byte)[:0]
	case n <= 4<<10:
		return pool4k.Get().(*[4 << 10]byte)[:0]
	case n <= 8<<10:
		return pool8k.Get().(*[8 << 10]byte)[:0]
	case n <= 16<<10:
		return pool16k.Get().(*[16 << 10]byte)[:0]
	case n <= 32<<10:
		return pool32k.Get().(*[32 << 10]byte)[:0]
	case n <= 64<<10:
		return pool64k.Get().(*[64 << 10]byte)[:0]
	case n <= 128<<10:
		return pool128k.Get().(*[128 << 10]byte)[:0]
	case n <= 256<<10:
		return pool256k.Get().(*[256 << 10]byte)[:0]
	}
	return make([]byte, 0, n)
}

// putBuf gives a buffer from getBuf back to its pool; nil and oversized
// buffers are dropped.
func putBuf(b []byte) {
	switch cap(b) {
	case 512:
		pool512.Put((*[512]byte)(b[:512]))
	case 1 << 10:
		pool1k.Put((*[1 << 10]byte)(b[:1<<10]))
	case 2 << 10:
		pool2k.Put((*[2 << 10]byte)(b[:2<<10]))
	case 4 << 10:
		pool4k.Put((*[4 << 10]byte)(b[:4<<10]))
	case 8 << 10:
		pool8k.Put((*[8 << 10]byte)(b[:8<<10]))
	case 16 << 10:
		pool16k.Put((*[16 << 10]byte)(b[:16<<10]))
	case 32 << 10:
		pool32k.Put((*[32 << 10]byte)(b[:32<<10]))
	case 64 << 10:
		pool64k.Put((*[64 << 10]byte)(b[:64<<10]))
	case 128 << 10:
		pool128k.Put((*[128 << 10]byte)(b[:128<<10]))
	case 256 << 10:
		pool256k.Put((*[256 << 10]byte)(b[:256<<10]))
	}
}

// GetBuffer lends an empty buffer with room for at least n bytes from the
// parser's pools (the engine copies a message into one when it hands it to
// another goroutine).
func GetBuffer(n int) []byte { return getBuf(n) }

// PutBuffer gives back a buffer from GetBuffer.
func PutBuffer(b []byte) { putBuf(b) }
