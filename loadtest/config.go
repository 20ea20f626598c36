package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/shardhub/shardhub/loadtest/report"
)

// Scenario is what a run does with its connections.
type Scenario string

// Scenarios.
const (
	// Broadcast publishes Rate messages/s to every connection of each target and
	// measures delivery and latency.
	Broadcast Scenario = "broadcast"
	// Channels subscribes each connection to SubsPerConn of Channels channels
	// (uniform or zipf) and publishes Rate messages/s per target round-robin over
	// the channels; ordering is checked per channel.
	Channels Scenario = "channels"
	// Connect is a connection storm: handshakes/s, handshake time, failures.
	Connect Scenario = "connect"
	// Idle holds the connections for Duration and samples the servers' memory.
	Idle Scenario = "idle"
)

// Publish modes.
const (
	// PublishHTTP posts each message to the server's HTTP API
	// (POST {api}/api/broadcast, /api/publish?channel=C).
	PublishHTTP = "http"
	// PublishWS sends each message on a publisher WebSocket connection per
	// target, rendered by PublishTemplate: for servers that relay what a client
	// sends.
	PublishWS = "ws"
)

// Publish target modes.
const (
	// PublishEach publishes to every target; a connection expects only what was
	// published to its own target (independent instances).
	PublishEach = "each"
	// PublishFirst publishes to the first target only and every connection
	// expects every message (instances sharing a broker).
	PublishFirst = "first"
)

// I/O models: how a process reads the connections it holds (Config.IO).
const (
	// IOGoroutine reads each connection in a goroutine of its own, blocked in
	// the runtime's network poller, through a read buffer of its own
	// (ReadBufferSize): about 5 KB per idle connection.
	IOGoroutine = "goroutine"
	// IOEpoll reads every connection from a few epoll loops (one per
	// GOMAXPROCS) into their own buffers: an idle connection has no goroutine
	// and no buffer, a few hundred bytes in all. Linux only.
	IOEpoll = "epoll"
)

// Defaults applied by Config for zero fields.
const (
	DefaultConns           = 100
	DefaultRampRate        = 2000
	DefaultDialConcurrency = 64
	DefaultConnectTimeout  = 10 * time.Second
	DefaultDuration        = 10 * time.Second
	DefaultRate            = 10
	DefaultSize            = 128
	DefaultSettle          = time.Second
	DefaultDrain           = 5 * time.Second
	DefaultReadyTimeout    = 10 * time.Second
	DefaultHTTPTimeout     = 5 * time.Second
	DefaultInterval        = time.Second
	DefaultReadBufferSize  = 2048
	DefaultChannels        = 100
	DefaultZipfS           = 1.1
	DefaultChannelPrefix   = "lt-"
	// DefaultSubscribeTemplate is the bundled server's subscribe request.
	DefaultSubscribeTemplate = `{"type":"subscribe","channel":"{{channel}}"}`
	// DefaultChannelsReadyMatch is the bundled server's subscribe reply.
	DefaultChannelsReadyMatch = `"type":"subscribed"`
	// fdMargin is the open files a process keeps besides its connections.
	fdMargin = 100
)

// Config describes a load-test run. The zero value plus URLs is a working
// broadcast run: 100 connections, 10 messages/s of 128 bytes for 10 s through
// the HTTP API. Every zero field means the default its comment names.
type Config struct {
	// Scenario is what the run does. Zero means Broadcast.
	Scenario Scenario `json:"scenario"`
	// URLs are the WebSocket endpoints (ws://host:port/path); connection i goes
	// to URLs[i % len(URLs)]. Required.
	URLs []string `json:"urls"`
	// Conns is the number of connections. Zero means 100.
	Conns int `json:"conns"`
	// RampRate is how many connections per second are opened, over all workers.
	// Zero means 2000; negative means as fast as DialConcurrency allows.
	RampRate float64 `json:"ramp_rate"`
	// DialConcurrency bounds the handshakes in flight per process. Zero means 64.
	DialConcurrency int `json:"dial_concurrency"`
	// ConnectTimeout bounds one dial plus handshake. Zero means 10s.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// SourceIPs are local addresses to dial from, round-robin, so that more than
	// ~28K connections can reach one server address. Empty lets the kernel choose.
	SourceIPs []netip.Addr `json:"source_ips,omitempty"`
	// Workers is the number of worker processes holding the connections; each
	// holds Conns/Workers. Zero or one means this process holds them all.
	Workers int `json:"workers"`
	// WorkerCommand is the command line that starts a worker process, which
	// must call ServeWorker. Zero means this executable with "loadtest --worker".
	WorkerCommand []string `json:"-"`
	// WorkerEnv is added to the workers' environment.
	WorkerEnv []string `json:"-"`
	// IO is how each process reads its connections: IOGoroutine or IOEpoll.
	// Both measure the same things the same way. Zero means DefaultIO (epoll
	// on Linux).
	IO string `json:"io,omitempty"`

	// Duration is the measured phase: publishing (broadcast, channels) or
	// holding the connections (connect, idle). Zero means 10s; for Connect a
	// negative value closes the connections as soon as the storm is over.
	Duration time.Duration `json:"duration"`
	// Settle is the pause between the last connection being ready and the
	// measured phase, so servers finish registering. Zero means 1s; negative none.
	Settle time.Duration `json:"settle"`
	// Drain is how long to wait after the last publish for deliveries still in
	// flight; the wait ends early once everything expected arrived. Zero means 5s.
	Drain time.Duration `json:"drain"`
	// ReadyTimeout bounds the wait for connections to become ready after the
	// ramp. Connections not ready by then are not counted. Zero means 10s.
	ReadyTimeout time.Duration `json:"ready_timeout"`
	// RampTimeout bounds the whole connection phase. Zero means the ramp's
	// expected length plus ConnectTimeout plus 30s.
	RampTimeout time.Duration `json:"ramp_timeout"`

	// Rate is messages per second published to each target. Zero means 10.
	Rate float64 `json:"rate"`
	// Size is the payload size in bytes (at least the marker, ~40 bytes). Zero means 128.
	Size int `json:"size"`
	// Publish is PublishHTTP or PublishWS. Zero means PublishHTTP.
	Publish string `json:"publish"`
	// PublishTo is PublishEach or PublishFirst. Zero means PublishEach.
	PublishTo string `json:"publish_to"`
	// APIs are the HTTP API base URLs (http://host:port), one per URL or one
	// for all. Zero derives them from URLs (ws→http, path dropped).
	APIs []string `json:"apis,omitempty"`
	// APIToken is sent as "Authorization: Bearer" to the HTTP API.
	APIToken string `json:"-"`
	// Token is sent as "Authorization: Bearer" on every WebSocket upgrade.
	Token string `json:"-"`
	// PublishTemplate renders a message sent by a publisher WebSocket:
	// {{payload}} is replaced by the JSON payload and {{channel}} by the channel
	// name. Zero means "{{payload}}" in the broadcast scenario and the bundled
	// server's publish request in the channels scenario.
	PublishTemplate string `json:"publish_template,omitempty"`
	// SubscribeTemplate is sent by each connection once per channel it joins
	// ({{channel}} replaced). Zero means none in the broadcast scenario and
	// DefaultSubscribeTemplate in the channels scenario.
	SubscribeTemplate string `json:"subscribe_template,omitempty"`
	// ReadyMatch makes a connection ready once it has received as many frames
	// containing this text as it sent subscribe messages (or one, when it sent
	// none). Zero means ready right after the handshake in the broadcast
	// scenario and DefaultChannelsReadyMatch in the channels scenario; "-"
	// forces ready-after-handshake. Against the bundled server use
	// `"type":"welcome"` for exact broadcast counts: it is sent once the
	// connection is registered.
	ReadyMatch string `json:"ready_match,omitempty"`

	// Channels is the number of channels (channels scenario). Zero means 100.
	Channels int `json:"channels,omitempty"`
	// SubsPerConn is how many channels each connection joins. Zero means 1.
	SubsPerConn int `json:"subs_per_conn,omitempty"`
	// Zipf chooses channels with a zipf distribution of exponent ZipfS instead
	// of uniformly.
	Zipf bool `json:"zipf,omitempty"`
	// ZipfS is the zipf exponent, above 1. Zero means 1.1.
	ZipfS float64 `json:"zipf_s,omitempty"`
	// ChannelPrefix names channel i ChannelPrefix+i. Zero means "lt-".
	ChannelPrefix string `json:"channel_prefix,omitempty"`

	// MetricsPath is scraped (Prometheus text) on every API base before and
	// after the run. Zero means "/metrics"; "-" disables.
	MetricsPath string `json:"metrics_path,omitempty"`
	// StatsPath is read for the server's memory (shardhub's /api/stats
	// "memory" object). Zero means "/api/stats"; "-" disables.
	StatsPath string `json:"stats_path,omitempty"`
	// ServerPIDs are server processes on this host whose RSS is read from
	// /proc/PID/status (for servers without a stats endpoint) and whose CPU is
	// read from /proc/PID/stat. When set, the server CPU figures are the sum over
	// exactly these processes rather than over the scraped /metrics, which for
	// instances sharing one address (SO_REUSEPORT) would reach only one.
	ServerPIDs []int `json:"server_pids,omitempty"`

	// Interval is the sampling period of progress and time series. Zero means 1s.
	Interval time.Duration `json:"interval"`
	// HTTPTimeout bounds each HTTP request (publish, scrape). Zero means 5s.
	HTTPTimeout time.Duration `json:"http_timeout"`
	// ReadBufferSize is each connection's read buffer with goroutine I/O, and
	// the handshake's with epoll I/O (whose loops read into 64 KiB buffers of
	// their own). Zero means 2 KiB.
	ReadBufferSize int `json:"read_buffer_size"`
	// Seed makes channel choices reproducible. Zero means 1.
	Seed uint64 `json:"seed"`
	// AllowRemote permits targets that are not loopback addresses.
	AllowRemote bool `json:"allow_remote"`

	// Logger receives progress and warnings. Nil means slog.Default().
	Logger *slog.Logger `json:"-"`
	// OnProgress, when set, is called every Interval from the run's goroutine
	// and must return quickly.
	OnProgress func(Progress) `json:"-"`
}

func (c Config) withDefaults() Config {
	if c.Scenario == "" {
		c.Scenario = Broadcast
	}
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.RampRate == 0 {
		c.RampRate = DefaultRampRate
	}
	if c.DialConcurrency == 0 {
		c.DialConcurrency = DefaultDialConcurrency
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.IO == "" {
		c.IO = DefaultIO
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.RampTimeout == 0 {
		ramp := time.Duration(0)
		if c.RampRate > 0 {
			ramp = time.Duration(float64(c.Conns) / c.RampRate * float64(time.Second))
		}
		c.RampTimeout = ramp + c.ConnectTimeout + 30*time.Second
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Publish == "" {
		c.Publish = PublishHTTP
	}
	if c.PublishTo == "" {
		c.PublishTo = PublishEach
	}
	if c.Channels == 0 {
		c.Channels = DefaultChannels
	}
	if c.SubsPerConn == 0 {
		c.SubsPerConn = 1
	}
	if c.ZipfS == 0 {
		c.ZipfS = DefaultZipfS
	}
	if c.ChannelPrefix == "" {
		c.ChannelPrefix = DefaultChannelPrefix
	}
	if c.Scenario == Channels {
		if c.SubscribeTemplate == "" {
			c.SubscribeTemplate = DefaultSubscribeTemplate
		}
		if c.ReadyMatch == "" {
			c.ReadyMatch = DefaultChannelsReadyMatch
		}
		if c.PublishTemplate == "" {
			c.PublishTemplate = `{"type":"publish","channel":"{{channel}}","data":{{payload}}}`
		}
	}
	if c.PublishTemplate == "" {
		c.PublishTemplate = "{{payload}}"
	}
	if c.MetricsPath == "" {
		c.MetricsPath = "/metrics"
	}
	if c.StatsPath == "" {
		c.StatsPath = "/api/stats"
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.HTTPTimeout == 0 {
		c.HTTPTimeout = DefaultHTTPTimeout
	}
	if c.ReadBufferSize == 0 {
		c.ReadBufferSize = DefaultReadBufferSize
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.APIs) == 0 {
		for _, u := range c.URLs {
			c.APIs = append(c.APIs, apiBase(u))
		}
	}
	return c
}

// apiBase derives http://host:port from a ws:// URL.
func apiBase(ws string) string {
	u, err := url.Parse(ws)
	if err != nil {
		return ""
	}
	scheme := "http"
	if u.Scheme == "wss" || u.Scheme == "https" {
		scheme = "https"
	}
	return scheme + "://" + u.Host
}

// Validate reports the first bad field, wrapped in ErrInvalidConfig. It does
// not check that targets are loopback: Run does, since that needs DNS.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
	}
	switch c.Scenario {
	case "", Broadcast, Channels, Connect, Idle:
	default:
		return bad("Scenario", "%q is not broadcast, channels, connect or idle", c.Scenario)
	}
	if len(c.URLs) == 0 {
		return bad("URLs", "at least one ws:// URL is required")
	}
	for _, s := range c.URLs {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return bad("URLs", "%q is not a ws:// URL", s)
		}
		if u.Scheme == "wss" {
			return bad("URLs", "%q: wss is not supported; run the load generator against the plain listener", s)
		}
	}
	if n := len(c.APIs); n != 0 && n != 1 && n != len(c.URLs) {
		return bad("APIs", "%d API bases for %d URLs: give one, or one per URL", n, len(c.URLs))
	}
	for _, s := range c.APIs {
		if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("APIs", "%q is not an http:// URL", s)
		}
	}
	switch {
	case c.Conns < 0:
		return bad("Conns", "negative")
	case c.Workers < 0:
		return bad("Workers", "negative")
	case c.Workers > 1 && c.Conns != 0 && c.Workers > c.Conns:
		return bad("Workers", "%d workers for %d connections", c.Workers, c.Conns)
	case c.DialConcurrency < 0:
		return bad("DialConcurrency", "negative")
	case c.Rate < 0:
		return bad("Rate", "negative")
	case c.Size < 0 || c.Size > maxFrame:
		return bad("Size", "%d out of range", c.Size)
	case c.Channels < 0:
		return bad("Channels", "negative")
	case c.SubsPerConn < 0:
		return bad("SubsPerConn", "negative")
	case c.Channels > 0 && c.SubsPerConn > c.Channels:
		return bad("SubsPerConn", "%d subscriptions per connection over %d channels", c.SubsPerConn, c.Channels)
	case c.ZipfS != 0 && c.ZipfS <= 1:
		return bad("ZipfS", "must be above 1")
	case c.ReadBufferSize != 0 && (c.ReadBufferSize < 256 || c.ReadBufferSize > 1<<20):
		return bad("ReadBufferSize", "%d outside [256, 1MiB]", c.ReadBufferSize)
	case c.Interval < 0 || c.HTTPTimeout < 0 || c.ConnectTimeout < 0 || c.Drain < 0 || c.ReadyTimeout < 0:
		return bad("durations", "negative")
	}
	switch c.IO {
	case "", IOGoroutine:
	case IOEpoll:
		if !epollSupported {
			return bad("IO", "epoll needs Linux; use goroutine")
		}
	default:
		return bad("IO", "%q is neither goroutine nor epoll", c.IO)
	}
	switch c.Publish {
	case "", PublishHTTP, PublishWS:
	default:
		return bad("Publish", "%q is neither http nor ws", c.Publish)
	}
	switch c.PublishTo {
	case "", PublishEach, PublishFirst:
	default:
		return bad("PublishTo", "%q is neither each nor first", c.PublishTo)
	}
	if c.PublishTemplate != "" && !strings.Contains(c.PublishTemplate, "{{payload}}") {
		return bad("PublishTemplate", "must contain {{payload}}")
	}
	return nil
}

// checkLoopback resolves every target and API host and refuses any that is not
// a loopback address, unless AllowRemote.
func (c Config) checkLoopback(ctx context.Context) error {
	if c.AllowRemote {
		return nil
	}
	hosts := map[string]bool{}
	for _, s := range append(append([]string(nil), c.URLs...), c.APIs...) {
		if u, err := url.Parse(s); err == nil {
			hosts[u.Hostname()] = true
		}
	}
	for h := range hosts {
		if ip, err := netip.ParseAddr(h); err == nil {
			if !ip.IsLoopback() {
				return fmt.Errorf("%w: %s", ErrRemoteTarget, h)
			}
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", h)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrRemoteTarget, h, err)
		}
		for _, ip := range ips {
			if !ip.Unmap().IsLoopback() {
				return fmt.Errorf("%w: %s resolves to %s", ErrRemoteTarget, h, ip)
			}
		}
	}
	return nil
}

// ParseSourceIPs parses a comma-separated list of addresses and inclusive
// ranges: "127.0.0.2-127.0.0.60,127.0.1.1".
func ParseSourceIPs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("%w: source IPs: %v", ErrInvalidConfig, err)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil {
			return nil, fmt.Errorf("%w: source IPs: %v", ErrInvalidConfig, err)
		}
		if b.Less(a) || a.Is4() != b.Is4() {
			return nil, fmt.Errorf("%w: source IPs: bad range %s", ErrInvalidConfig, part)
		}
		for ip := a; ; ip = ip.Next() {
			out = append(out, ip)
			if ip == b || len(out) > 1<<16 {
				break
			}
		}
	}
	if len(out) > 1<<16 {
		return nil, fmt.Errorf("%w: source IPs: more than 65536 addresses", ErrInvalidConfig)
	}
	return out, nil
}

// configJSON is how a Config reads in JSON (reports, worker specs): every
// duration as people write it ("10s"), which also decodes from the numbers of
// nanoseconds older reports carry. Its fields shadow Config's fields of the
// same JSON name.
type configJSON struct {
	plainConfig
	ConnectTimeout report.Duration `json:"connect_timeout"`
	Duration       report.Duration `json:"duration"`
	Settle         report.Duration `json:"settle"`
	Drain          report.Duration `json:"drain"`
	ReadyTimeout   report.Duration `json:"ready_timeout"`
	RampTimeout    report.Duration `json:"ramp_timeout"`
	Interval       report.Duration `json:"interval"`
	HTTPTimeout    report.Duration `json:"http_timeout"`
}

// plainConfig is Config without its JSON methods.
type plainConfig Config

// MarshalJSON writes c with its durations as strings such as "10s".
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(configJSON{
		plainConfig:    plainConfig(c),
		ConnectTimeout: report.Duration(c.ConnectTimeout),
		Duration:       report.Duration(c.Duration),
		Settle:         report.Duration(c.Settle),
		Drain:          report.Duration(c.Drain),
		ReadyTimeout:   report.Duration(c.ReadyTimeout),
		RampTimeout:    report.Duration(c.RampTimeout),
		Interval:       report.Duration(c.Interval),
		HTTPTimeout:    report.Duration(c.HTTPTimeout),
	})
}

// UnmarshalJSON reads what MarshalJSON writes, and durations in nanoseconds.
func (c *Config) UnmarshalJSON(b []byte) error {
	var j configJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = Config(j.plainConfig)
	c.ConnectTimeout = time.Duration(j.ConnectTimeout)
	c.Duration = time.Duration(j.Duration)
	c.Settle = time.Duration(j.Settle)
	c.Drain = time.Duration(j.Drain)
	c.ReadyTimeout = time.Duration(j.ReadyTimeout)
	c.RampTimeout = time.Duration(j.RampTimeout)
	c.Interval = time.Duration(j.Interval)
	c.HTTPTimeout = time.Duration(j.HTTPTimeout)
	return nil
}
