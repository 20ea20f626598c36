package frame

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestHeaderLengths(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		n       int
		hdr     []byte
		hdrSize int
	}{
		{"empty", 0, []byte{0x81, 0}, 2},
		{"125", 125, []byte{0x81, 125}, 2},
		{"126 uses 16-bit length", 126, []byte{0x81, 126, 0, 126}, 4},
		{"65535", 65535, []byte{0x81, 126, 0xff, 0xff}, 4},
		{"65536 uses 64-bit length", 65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := New(tt.n)
			f.AppendBytes(bytes.Repeat([]byte{'a'}, tt.n))
			f.Seal(OpText)
			b := f.Bytes()
			if !bytes.Equal(b[:tt.hdrSize], tt.hdr) {
				t.Fatalf("header = % x, want % x", b[:tt.hdrSize], tt.hdr)
			}
			if len(b) != tt.hdrSize+tt.n || f.Len() != len(b) {
				t.Fatalf("len = %d (Len %d), want %d", len(b), f.Len(), tt.hdrSize+tt.n)
			}
			f.Release()
		})
	}
}

func TestAppendPastCapacityKeepsHeaderRoom(t *testing.T) {
	t.Parallel()
	f := New(4) // pooled 256-byte class
	big := bytes.Repeat([]byte{'z'}, 5000)
	f.SetPayload(append(f.Payload(), big...))
	f.Seal(OpBinary)
	b := f.Bytes()
	if b[0] != 0x82 || b[1] != 126 || int(binary.BigEndian.Uint16(b[2:])) != 5000 || !bytes.Equal(b[4:], big) {
		t.Fatalf("bad frame after growth: % x…", b[:8])
	}
	f.Release()
}

func TestCopyIsRawBytes(t *testing.T) {
	t.Parallel()
	raw := []byte{0x8a, 0x02, 'h', 'i'} // a pong built elsewhere
	f := Copy(raw)
	if !bytes.Equal(f.Bytes(), raw) {
		t.Fatalf("Copy = % x, want % x", f.Bytes(), raw)
	}
	raw[2] = 'X'
	if f.Bytes()[2] != 'h' {
		t.Fatal("Copy shares memory with its input")
	}
	f.Release()
}

func TestCloseFrame(t *testing.T) {
	t.Parallel()
	f := Close(1001, "bye")
	want := []byte{0x88, 5, 0x03, 0xe9, 'b', 'y', 'e'}
	if !bytes.Equal(f.Bytes(), want) {
		t.Fatalf("Close = % x, want % x", f.Bytes(), want)
	}
	long := Close(1000, string(bytes.Repeat([]byte{'r'}, 300)))
	if n := len(long.Bytes()) - 2; n != 125 {
		t.Fatalf("close payload = %d bytes, want the 125-byte control frame maximum", n)
	}
}

func TestRefCounting(t *testing.T) {
	t.Parallel()
	f := New(10)
	f.Retain(2)
	if f.Refs() != 3 {
		t.Fatalf("refs = %d, want 3", f.Refs())
	}
	f.ReleaseN(2)
	f.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("releasing a released frame did not panic")
		}
	}()
	f.Release()
}

func TestStaticIgnoresRefCounts(t *testing.T) {
	t.Parallel()
	f := Static(OpPing, nil)
	for range 10 {
		f.Release()
	}
	f.Retain(5)
	if !bytes.Equal(f.Bytes(), []byte{0x89, 0}) {
		t.Fatalf("ping = % x", f.Bytes())
	}
}

func BenchmarkNewSealRelease(b *testing.B) {
	payload := bytes.Repeat([]byte{'x'}, 64)
	b.ReportAllocs()
	for b.Loop() {
		f := New(len(payload))
		f.AppendBytes(payload)
		f.Seal(OpText)
		f.Release()
	}
}
