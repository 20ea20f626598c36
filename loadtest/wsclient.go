package loadtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// The client side of RFC 6455 is hand-rolled rather than gws's client: a load
// generator holds tens of thousands of connections that mostly read small
// frames, and the cost that matters is per connection (memory) and per frame
// (CPU). This reader parses each frame in place inside its bufio.Reader and
// hands the payload to the marker scan without copying or allocating, and a
// connection costs one goroutine, its socket and a read buffer (2 KiB by
// default). BenchmarkClientRead measures it against gws's client.

var wsGUID = []byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11")

// wsConn is one client WebSocket connection. Reads belong to one goroutine
// (the connection's reader); writes may come from any goroutine.
type wsConn struct {
	nc net.Conn
	br *bufio.Reader

	pending int    // bytes of the last in-place frame still to discard; reader-owned
	big     []byte // payloads larger than br's buffer, and reassembled fragments; reader-owned
	fragOp  byte   // opcode of the message being reassembled; 0 when none; reader-owned

	wmu  sync.Mutex // guards wbuf and serialises writes (pongs, close, publishes).
	wbuf []byte
}

// closeError is the server closing the connection with a close frame.
type closeError struct{ code int }

func (e closeError) Error() string { return fmt.Sprintf("closed by server with %d", e.code) }

// handshakeError is an upgrade answered with something other than 101.
type handshakeError struct {
	status int
	reason string
}

func (e handshakeError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("handshake: HTTP %d", e.status)
	}
	return "handshake: " + e.reason
}

// dialWS connects to u and performs the opening handshake within timeout.
func dialWS(ctx context.Context, d *net.Dialer, u *url.URL, header http.Header, readBuf int, timeout time.Duration) (*wsConn, error) {
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "wss" {
			return nil, errors.New("wss is not supported by the load generator")
		}
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := dctx.Deadline()
	_ = nc.SetDeadline(deadline)
	// A cancelled ctx must interrupt a handshake stuck in Read.
	stop := context.AfterFunc(dctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var keyRaw [16]byte
	_, _ = rand.Read(keyRaw[:])
	key := base64.StdEncoding.EncodeToString(keyRaw[:])
	var req strings.Builder
	path := u.RequestURI()
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, u.Host, key)
	for k, vs := range header {
		for _, v := range vs {
			fmt.Fprintf(&req, "%s: %s\r\n", k, v)
		}
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(nc, req.String()); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, readBuf)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, handshakeError{reason: "connection closed during handshake"}
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
		nc.Close()
		return nil, handshakeError{status: resp.StatusCode}
	}
	h := sha1.New()
	h.Write([]byte(key))
	h.Write(wsGUID)
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h.Sum(nil)) {
		nc.Close()
		return nil, handshakeError{reason: "bad Sec-WebSocket-Accept"}
	}
	_ = nc.SetDeadline(time.Time{})
	return &wsConn{nc: nc, br: br}, nil
}

// next returns the next data message (opcode text or binary) and its payload.
// The payload is valid until the next call. Pings are answered, pongs skipped;
// a close frame is echoed and returned as a closeError.
func (c *wsConn) next() (byte, []byte, error) {
	for {
		if c.pending > 0 {
			_, _ = c.br.Discard(c.pending)
			c.pending = 0
		}
		b, err := c.br.Peek(2)
		if err != nil {
			return 0, nil, err
		}
		h, ok, err := decodeHeader(b)
		if err == nil && !ok { // the extended length or the mask is still to come
			if b, err = c.br.Peek(h.hl); err == nil {
				h, _, err = decodeHeader(b)
			}
		}
		if err != nil {
			return 0, nil, err
		}
		hl, n, op := h.hl, h.n, h.op
		var p []byte
		if total := hl + n; total <= c.br.Size() {
			all, err := c.br.Peek(total)
			if err != nil {
				return 0, nil, err
			}
			p, c.pending = all[hl:], total
		} else {
			_, _ = c.br.Discard(hl)
			off := 0
			if op == opContinuation {
				off = len(c.big) // append to the message being reassembled
			}
			if off+n > maxFrame {
				return 0, nil, fmt.Errorf("fragmented message exceeds %d bytes", maxFrame)
			}
			if cap(c.big) < off+n {
				nb := make([]byte, off, off+n)
				copy(nb, c.big)
				c.big = nb
			}
			c.big = c.big[:off+n]
			if _, err := io.ReadFull(c.br, c.big[off:]); err != nil {
				return 0, nil, err
			}
			p = c.big[off:]
		}
		if h.masked {
			// Servers must not mask (RFC 6455 §5.1); unmask anyway rather than fail.
			maskBytes(p, h.mask)
		}
		switch op {
		case opPing:
			if err := c.write(opPong, p); err != nil {
				return 0, nil, err
			}
			continue
		case opPong:
			continue
		case opClose:
			code := closeCode(p)
			var echo [2]byte
			_ = c.write(opClose, closeEcho(code, &echo))
			return 0, nil, closeError{code: code}
		case opText, opBinary:
			if c.fragOp != 0 {
				return 0, nil, errInterleavedData
			}
			if h.fin {
				return op, p, nil
			}
			c.fragOp = op
			if c.pending > 0 { // in place: start the reassembly buffer
				c.big = append(c.big[:0], p...)
			}
			continue
		default: // opContinuation: decodeHeader refused every other opcode
			if c.fragOp == 0 {
				return 0, nil, errOrphanCont
			}
			if c.pending > 0 { // in place: copy after what was reassembled so far
				if len(c.big)+len(p) > maxFrame {
					return 0, nil, fmt.Errorf("fragmented message exceeds %d bytes", maxFrame)
				}
				c.big = append(c.big, p...)
			}
			if !h.fin {
				continue
			}
			op := c.fragOp
			c.fragOp = 0
			return op, c.big, nil
		}
	}
}

// write sends one masked frame. Safe for concurrent use.
func (c *wsConn) write(op byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendClientFrame(c.wbuf[:0], op, p)
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(c.wbuf)
	return err
}

// close closes the socket without a close handshake: the run is over.
func (c *wsConn) close() error { return c.nc.Close() }
