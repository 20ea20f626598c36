package loadtest

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Client is one client WebSocket connection of the load generator's RFC 6455
// implementation, for other measuring tools (shardhub bench --real uses it).
// Next belongs to one goroutine; Close may be called from any.
type Client struct{ c *wsConn }

// Dial connects to the ws:// URL rawURL from dialer d (which picks the source
// address) and completes the opening handshake within timeout. readBuf is the
// connection's read buffer; frames that do not fit are read past it.
func Dial(ctx context.Context, d *net.Dialer, rawURL string, header http.Header, readBuf int, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := dialWS(ctx, d, u, header, readBuf, timeout)
	if err != nil {
		return nil, err
	}
	return &Client{c}, nil
}

// Next returns the payload of the next data message. It is valid until the
// next call. Pings are answered and pongs skipped; a close frame from the
// server is echoed and returned as an error.
func (c *Client) Next() ([]byte, error) {
	_, p, err := c.c.next()
	return p, err
}

// Close closes the connection without a closing handshake.
func (c *Client) Close() error { return c.c.close() }
