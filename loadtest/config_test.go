package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Config{URLs: []string{"ws://127.0.0.1:1/ws"}}
	tests := []struct {
		name string
		mod  func(*Config)
		err  error
	}{
		{"zero plus URL", func(*Config) {}, nil},
		{"no URL", func(c *Config) { c.URLs = nil }, ErrInvalidConfig},
		{"http URL", func(c *Config) { c.URLs = []string{"http://127.0.0.1/"} }, ErrInvalidConfig},
		{"wss", func(c *Config) { c.URLs = []string{"wss://127.0.0.1/"} }, ErrInvalidConfig},
		{"bad scenario", func(c *Config) { c.Scenario = "flood" }, ErrInvalidConfig},
		{"APIs count", func(c *Config) {
			c.URLs = []string{"ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws", "ws://127.0.0.1:3/ws"}
			c.APIs = []string{"http://a", "http://b"}
		}, ErrInvalidConfig},
		{"more workers than conns", func(c *Config) { c.Conns, c.Workers = 2, 3 }, ErrInvalidConfig},
		{"subs over channels", func(c *Config) { c.Channels, c.SubsPerConn = 2, 3 }, ErrInvalidConfig},
		{"zipf exponent", func(c *Config) { c.ZipfS = 0.5 }, ErrInvalidConfig},
		{"template without payload", func(c *Config) { c.PublishTemplate = "{}" }, ErrInvalidConfig},
		{"publish mode", func(c *Config) { c.Publish = "carrier-pigeon" }, ErrInvalidConfig},
		{"I/O model", func(c *Config) { c.IO = "uring" }, ErrInvalidConfig},
		{"goroutine I/O", func(c *Config) { c.IO = IOGoroutine }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tt.mod(&c)
			if err := c.Validate(); !errors.Is(err, tt.err) {
				t.Errorf("Validate() = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		url    string
		remote bool
		err    error
	}{
		{"127.0.0.1", "ws://127.0.0.1:8080/ws", false, nil},
		{"127.0.0.9", "ws://127.0.0.9:8080/ws", false, nil},
		{"::1", "ws://[::1]:8080/ws", false, nil},
		{"localhost", "ws://localhost:8080/ws", false, nil},
		{"private address", "ws://10.0.0.5:8080/ws", false, ErrRemoteTarget},
		{"public address", "ws://93.184.216.34/ws", false, ErrRemoteTarget},
		{"unspecified", "ws://0.0.0.0:8080/ws", false, ErrRemoteTarget},
		{"allowed remote", "ws://10.0.0.5:8080/ws", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Config{URLs: []string{tt.url}, AllowRemote: tt.remote}.withDefaults()
			if err := c.checkLoopback(context.Background()); !errors.Is(err, tt.err) {
				t.Errorf("checkLoopback = %v, want %v", err, tt.err)
			}
		})
	}
	// A loopback WebSocket URL with a remote API base is refused too.
	c := Config{URLs: []string{"ws://127.0.0.1:1/ws"}, APIs: []string{"http://10.1.1.1"}}.withDefaults()
	if err := c.checkLoopback(context.Background()); !errors.Is(err, ErrRemoteTarget) {
		t.Errorf("remote API base: %v", err)
	}
	// Run refuses before opening anything.
	if _, err := Run(context.Background(), Config{URLs: []string{"ws://10.0.0.5:1/ws"}}); !errors.Is(err, ErrRemoteTarget) {
		t.Errorf("Run with a remote target: %v", err)
	}
}

func TestParseSourceIPs(t *testing.T) {
	t.Parallel()
	ips, err := ParseSourceIPs("127.0.0.2-127.0.0.60, 127.0.1.1")
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 60 || ips[0] != netip.MustParseAddr("127.0.0.2") || ips[58] != netip.MustParseAddr("127.0.0.60") || ips[59] != netip.MustParseAddr("127.0.1.1") {
		t.Errorf("got %d addresses: %v…", len(ips), ips[:3])
	}
	for _, bad := range []string{"127.0.0.9-127.0.0.2", "x", "127.0.0.1-::1", "127.0.0.1-y"} {
		if _, err := ParseSourceIPs(bad); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}

func TestTooManyConnsPerProcess(t *testing.T) {
	t.Parallel()
	limit, err := RaiseFileLimit()
	if err != nil || limit > 1<<22 {
		t.Skip("no usable open-files limit")
	}
	_, err = Run(context.Background(), Config{URLs: []string{"ws://127.0.0.1:1/ws"}, Conns: int(limit)})
	if !errors.Is(err, ErrTooManyConns) {
		t.Errorf("Run with %d conns in one process: %v", limit, err)
	}
}

// TestConfigJSON: durations read as people write them, round-trip (worker
// processes receive their Config as JSON), and older reports' nanoseconds
// still decode.
func TestConfigJSON(t *testing.T) {
	t.Parallel()
	c := Config{URLs: []string{"ws://127.0.0.1:1/ws"}, Conns: 7, Duration: 10 * time.Second, Settle: 250 * time.Millisecond,
		Interval: time.Second, Token: "secret"}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"duration":"10s"`, `"settle":"250ms"`, `"interval":"1s"`, `"connect_timeout":"0s"`, `"conns":7`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	if strings.Contains(string(b), "secret") {
		t.Error("the token was written")
	}
	var back Config
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Duration != c.Duration || back.Settle != c.Settle || back.Conns != 7 || back.URLs[0] != c.URLs[0] {
		t.Errorf("round trip: %+v", back)
	}
	var old Config
	if err := json.Unmarshal([]byte(`{"scenario":"broadcast","conns":3,"duration":10000000000,"drain":"5s"}`), &old); err != nil {
		t.Fatal(err)
	}
	if old.Duration != 10*time.Second || old.Drain != 5*time.Second || old.Conns != 3 {
		t.Errorf("old report config: %+v", old)
	}
	if err := json.Unmarshal([]byte(`{"duration":"ten seconds"}`), &old); err == nil {
		t.Error("a bad duration decoded")
	}
}
