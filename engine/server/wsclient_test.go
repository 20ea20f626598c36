package server_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// wsClient is a plain Go WebSocket client of the JSON protocol for these tests.
type wsClient struct {
	tb   testing.TB
	ws   *gws.Conn
	id   string
	msgs chan map[string]any
}

type wsHandler struct {
	gws.BuiltinEventHandler
	c *wsClient
}

func (h wsHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	var v map[string]any
	err := json.Unmarshal(bytes.Clone(m.Bytes()), &v)
	m.Close()
	if err != nil {
		h.c.tb.Errorf("server sent non-JSON: %v", err)
		return
	}
	select {
	case h.c.msgs <- v:
	default: // a test that does not read its messages does not need them
	}
}

// dialWS connects to ws://addr/ws and waits for the welcome.
func dialWS(tb testing.TB, addr string) *wsClient {
	tb.Helper()
	c := &wsClient{tb: tb, msgs: make(chan map[string]any, 256)}
	ws, _, err := gws.NewClient(wsHandler{c: c}, &gws.ClientOption{Addr: "ws://" + addr + "/ws", ReadBufferSize: 4096})
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	c.ws = ws
	go ws.ReadLoop()
	tb.Cleanup(func() { _ = ws.NetConn().Close() })
	c.id, _ = c.next(func(m map[string]any) bool { return m["type"] == "welcome" })["conn"].(string)
	return c
}

func (c *wsClient) send(v any) {
	c.tb.Helper()
	b, _ := json.Marshal(v)
	if err := c.ws.WriteMessage(gws.OpcodeText, b); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

// subscribe subscribes and waits for the reply.
func (c *wsClient) subscribe(channel string) {
	c.tb.Helper()
	c.send(map[string]any{"type": "subscribe", "channel": channel})
	c.next(func(m map[string]any) bool { return m["type"] == "subscribed" && m["channel"] == channel })
}

// next returns the first message for which want is true, skipping others.
func (c *wsClient) next(want func(map[string]any) bool) map[string]any {
	c.tb.Helper()
	deadline := time.After(waitLong)
	for {
		select {
		case m := <-c.msgs:
			if want(m) {
				return m
			}
		case <-deadline:
			c.tb.Fatalf("no wanted message within %v", waitLong)
			return nil
		}
	}
}

// stats returns the next stats publication for which want is true, decoded.
func (c *wsClient) stats(want func(statsMsg) bool) statsMsg {
	c.tb.Helper()
	var got statsMsg
	c.next(func(m map[string]any) bool {
		if m["type"] != "message" || m["channel"] != "$sys.stats" {
			return false
		}
		b, _ := json.Marshal(m["data"])
		got = statsMsg{}
		if err := json.Unmarshal(b, &got); err != nil {
			c.tb.Fatalf("stats message %s: %v", b, err)
		}
		return want(got)
	})
	return got
}

// statsMsg is a decoded $sys.stats publication, read the way a dashboard
// would: from JSON, by field name.
type statsMsg struct {
	Instance    string `json:"instance"`
	Connections int    `json:"connections"`
	Shards      []int  `json:"shards"`
	Time        int64  `json:"time"`
	Rates       struct {
		Interval    float64 `json:"interval_s"`
		MessagesIn  float64 `json:"messages_in"`
		MessagesOut float64 `json:"messages_out"`
		Deliveries  float64 `json:"deliveries"`
	} `json:"rates"`
	Memory struct {
		HeapInuse uint64 `json:"heap_inuse_bytes"`
	} `json:"memory"`
	Broker struct {
		Mode   string         `json:"mode"`
		State  string         `json:"state"`
		Detail map[string]any `json:"detail"`
	} `json:"broker"`
	Cluster []map[string]any `json:"cluster"`
}
