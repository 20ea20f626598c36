package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (server *net.TCPConn, client *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	srv := <-accepted
	tb.Cleanup(func() { srv.Close(); cl.Close() })
	return srv.(*net.TCPConn), cl.(*net.TCPConn)
}

func TestTryWriteSendsAllBuffersInOrder(t *testing.T) {
	t.Parallel()
	srv, cl := tcpPair(t)
	tr := New(srv)
	if _, ok := tr.(*Conn); ok && isLinux() {
		t.Fatal("New returned the blocking fallback for a TCP conn on Linux")
	}
	var bufs [][]byte
	var want []byte
	for i := range 2000 { // more than the kernel's 1024 iovecs per call
		b := []byte{byte(i), byte(i >> 8), 0xAB}
		bufs = append(bufs, b, nil) // empty buffers are skipped
		want = append(want, b...)
	}
	n, err := tr.TryWrite(bufs)
	if err != nil {
		t.Fatal(err)
	}
	if n < len(want) && !isLinux() {
		n2, err := tr.Write(bufs, time.Now().Add(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n = n2
	}
	if n != len(want) {
		t.Fatalf("wrote %d bytes, want %d", n, len(want))
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(cl, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("bytes arrived changed or out of order")
	}
}

// A peer that stops reading fills the socket buffers: TryWrite must return a
// short count at once instead of blocking, and Write must honour its deadline.
func TestTryWriteNeverBlocks(t *testing.T) {
	t.Parallel()
	if !isLinux() {
		t.Skip("the non-blocking path is Linux only")
	}
	srv, cl := tcpPair(t)
	_ = srv.SetWriteBuffer(16 << 10)
	_ = cl.SetReadBuffer(16 << 10)
	tr := New(srv)
	chunk := bytes.Repeat([]byte{'x'}, 64<<10)
	short, zeros := false, 0
	for i := 0; zeros < 3; i++ {
		n, err := tr.TryWrite([][]byte{chunk})
		if err != nil {
			t.Fatal(err)
		}
		short = short || n < len(chunk)
		if n == 0 {
			zeros++
			time.Sleep(10 * time.Millisecond) // let loopback move what it can
		}
		if i > 100000 {
			t.Fatal("the socket never filled up")
		}
	}
	if !short {
		t.Fatal("TryWrite never returned a short count")
	}
	_, err := tr.Write([][]byte{chunk}, time.Now().Add(50*time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocking Write on a full socket = %v, want a deadline error", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.TryWrite([][]byte{chunk}); err == nil {
		t.Fatal("TryWrite after Close succeeded")
	}
}

func TestHalfClose(t *testing.T) {
	t.Parallel()
	srv, cl := tcpPair(t)
	tr := New(srv)
	if _, err := tr.TryWrite([][]byte{[]byte("bye")}); err != nil {
		t.Fatal(err)
	}
	hc, ok := tr.(HalfCloser)
	if !ok {
		t.Fatal("TCP transport cannot half-close")
	}
	if err := hc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cl) // EOF arrives after the data
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := cl.Write([]byte("ok")); err != nil { // the other direction stays open
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("server read %q, %v", buf, err)
	}
}

func TestSinkCounts(t *testing.T) {
	t.Parallel()
	var s Sink
	n, _ := s.TryWrite([][]byte{[]byte("abc"), []byte("de")})
	_, _ = s.Write([][]byte{[]byte("f")}, time.Time{})
	_ = s.Close()
	if n != 5 || s.Bytes() != 6 || s.Writes() != 2 || s.Closes() != 1 {
		t.Fatalf("n=%d bytes=%d writes=%d closes=%d", n, s.Bytes(), s.Writes(), s.Closes())
	}
}

func BenchmarkTryWriteLoopback(b *testing.B) {
	srv, cl := tcpPair(b)
	go func() { _, _ = io.Copy(io.Discard, cl) }()
	tr := New(srv)
	frames := make([][]byte, 16)
	for i := range frames {
		frames[i] = bytes.Repeat([]byte{'m'}, 64)
	}
	b.ReportAllocs()
	b.SetBytes(64 * 16)
	for b.Loop() {
		if _, err := tr.Write(frames, time.Now().Add(time.Second)); err != nil {
			b.Fatal(err)
		}
	}
}
