package engine_test

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/internal/wsread"
	"github.com/shardhub/shardhub/engine/server"
)

// The fuzz target shares one live server per process: starting one per input
// would measure startup, not the parser.
var (
	fuzzOnce   sync.Once
	fuzzServer *testServer
)

// fuzzTB lets the shared server outlive the first input's *testing.T: its
// clean-up runs from TestMain once every test is done.
type fuzzTB struct{ testing.TB }

var fuzzCleanups []func()

func (fuzzTB) Cleanup(f func()) { fuzzCleanups = append(fuzzCleanups, f) }

// stopFuzzServer stops the shared server, if a fuzz target started one.
func stopFuzzServer() {
	for i := len(fuzzCleanups) - 1; i >= 0; i-- {
		fuzzCleanups[i]()
	}
}

// FuzzWire feeds arbitrary bytes to a live engine right after a real
// handshake, through the same socket and read path as any client. The process
// must survive (a panic anywhere in the server fails the fuzz run), and the
// connection must end: with a close frame carrying a valid code (the engine's,
// or the peer's own echoed back), or when the input simply stops.
func FuzzWire(f *testing.F) {
	for _, seed := range [][]byte{
		crashFrame,
		rawFrame(0x1, []byte(`{"type":"subscribe","channel":"news","id":1}`), true),
		rawFrame(0x1, []byte(`{"type":"publish","channel":"news","data":{"x":1}}`), true),
		rawFrame(0x1, []byte(`{"type":"send","to":"nobody","data":"hi"}`), true),
		rawFrame(0x2, []byte(`{"type":"publish","channel":"news","data":"`+"\xff\xfe"+`"}`), true),
		append(rawFrame(0x1, []byte(`{"type":"sub`), false), rawFrame(0x0, []byte(`scribe","channel":"a"}`), true)...),
		append(rawFrame(0x1, []byte("x"), false), rawFrame(0x9, []byte("ping"), true)...),
		rawFrame(0x9, []byte("hello"), true),
		rawFrame(0xA, nil, true),
		rawFrame(0x8, binary.BigEndian.AppendUint16(nil, 1000), true),
		rawFrame(0x8, []byte{3}, true),
		rawFrame(0x1, []byte{0xff}, true),
		{0x81, 0xFE, 0x00, 0x05, 1, 2, 3, 4, 'a'},
		{0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzOnce.Do(func() {
			fuzzServer = startServer(fuzzTB{t}, engine.Config{MaxMessageSize: 1 << 12, InboundRate: -1}, server.Options{})
		})
		ts := fuzzServer
		r := rawDial(t, ts, nil)
		if err := r.write(in); err != nil {
			return // the server closed first: it may, on hostile input
		}
		_ = r.c.(*net.TCPConn).CloseWrite()
		for {
			_ = r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			fr, err := r.readFrame()
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the connection did not end within 30s of the input")
			}
			if err != nil {
				return // reset: the server closed with input unread
			}
			if fr.op == 0x8 {
				if len(fr.payload) >= 2 {
					// The engine's own codes, or the peer's echoed back.
					if code := binary.BigEndian.Uint16(fr.payload); !wsread.ValidCloseCode(code) {
						t.Fatalf("close code %d", code)
					}
				}
			}
		}
	})
}
