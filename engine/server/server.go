// Package server is the HTTP face of an engine, as the bundled `shardhub serve`
// exposes it: the WebSocket endpoint, a publish API for backends, health, stats
// and Prometheus metrics, a live dashboard and the JavaScript client.
// Embedders can mount Handler as is or pick the parts they need.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/internal/ratelog"
)

// Options configures Handler.
type Options struct {
	// APIToken, when set, is the bearer token required by the /api/broadcast,
	// /api/publish and /api/send endpoints. Without it they answer loopback
	// clients only (guard.go).
	APIToken string
	// AllowRemoteAPI lets clients on any address use the publish API without
	// a token. Off by default; behind a reverse proxy (every request then
	// comes from loopback) set APIToken instead.
	AllowRemoteAPI bool
	// StatsToken, when set, is the bearer token required by /metrics,
	// /api/stats and /api/cluster. Empty leaves them open (/healthz always is).
	StatsToken string
	// Pprof mounts net/http/pprof under /debug/pprof/.
	Pprof bool
	// Health reports extra health detail (a broker's state); degraded makes
	// /healthz answer 503 with the detail. Nil reports only the engine.
	Health func() (degraded bool, detail map[string]any)
	// Logger receives request errors. Nil means slog.Default().
	Logger *slog.Logger
	// Cluster lists the cluster's live instances for GET /api/cluster (any
	// JSON value; redisbroker.Broker.Cluster fits). Nil means a single node:
	// the route lists this instance alone.
	Cluster func(ctx context.Context) (any, error)
	// StatsInterval is the period of the stats publisher, which publishes a
	// StatsMessage on StatsChannel for the dashboard. Zero means
	// DefaultStatsInterval (one second); negative disables it.
	StatsInterval time.Duration
}

// Handler returns the bundled server's routes for e:
//
//	GET  /ws                      WebSocket endpoint (docs/protocol.md)
//	GET  /healthz                 200 {"status":"ok"}, 503 when shutting down or degraded
//	GET  /metrics                 Prometheus metrics
//	GET  /api/stats               engine, shard and memory statistics (JSON)
//	GET  /api/cluster             live instances and their connection counts (JSON)
//	POST /api/broadcast           body = data for every connection
//	POST /api/publish?channel=C   body = data for the subscribers of C
//	POST /api/send?conn=ID        body = private message for one connection
//	GET  /                        the dashboard (fed by StatsChannel) with a try-it panel
//	GET  /shardhub.js             the JavaScript client (docs/client.md)
//
// It also starts the engine's stats publisher (Options.StatsInterval), which
// stops when the engine has shut down.
func Handler(e *engine.Engine, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// Refusals are logged, and clients cause them: rate-limited.
	opts.Logger = ratelog.Logger(opts.Logger)
	// HELP and TYPE lines on /metrics. The switch is process-wide in
	// VictoriaMetrics/metrics: an embedder serving other sets gets them too.
	vm.ExposeMetadata(true)
	s := &api{e: e, opts: opts}
	for _, code := range apiErrorCodes {
		e.Metrics().GetOrCreateCounter(`shardhub_api_errors_total{code="` + code + `"}`)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", e)
	mux.HandleFunc("GET /healthz", s.health)
	mux.HandleFunc("GET /metrics", s.guardStats(s.metrics))
	mux.HandleFunc("GET /api/stats", s.guardStats(s.stats))
	mux.HandleFunc("GET /api/cluster", s.guardStats(s.cluster))
	mux.HandleFunc("POST /api/broadcast", s.guardPublish(s.broadcast))
	mux.HandleFunc("POST /api/publish", s.guardPublish(s.publish))
	mux.HandleFunc("POST /api/send", s.guardPublish(s.send))
	mountWeb(mux)
	startStatsPublisher(e, opts)
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", s.guardDebug(pprof.Index))
		mux.HandleFunc("/debug/pprof/cmdline", s.guardDebug(pprof.Cmdline))
		mux.HandleFunc("/debug/pprof/profile", s.guardDebug(pprof.Profile))
		mux.HandleFunc("/debug/pprof/symbol", s.guardDebug(pprof.Symbol))
		mux.HandleFunc("/debug/pprof/trace", s.guardDebug(pprof.Trace))
	}
	return mux
}

// apiErrorCodes are the codes of shardhub_api_errors_total, created at zero.
var apiErrorCodes = []string{"bad_request", "bad_channel", "too_large", "not_found", "overloaded", "shutting_down",
	"internal", "unavailable", "unauthorized", "forbidden", "cross_site", "unsupported_media_type"}

type api struct {
	e    *engine.Engine
	opts Options
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// fail answers a failed API request with a JSON error, counts it in the
// engine's metrics as shardhub_api_errors_total{code=…} and logs it: a backend
// sending bad requests shows up without a packet capture.
func (s *api) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	s.e.Metrics().GetOrCreateCounter(`shardhub_api_errors_total{code="` + code + `"}`).Inc()
	level := slog.LevelInfo // the client's mistake
	if code == "internal" || code == "unavailable" {
		level = slog.LevelWarn // ours, or the broker's
	}
	s.opts.Logger.Log(r.Context(), level, "shardhub: api request refused", "method", r.Method, "path", r.URL.Path,
		"status", status, "code", code, "err", msg, "remote", r.RemoteAddr)
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

// readBody reads the request body up to the engine's message size limit.
func (s *api) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	limit := s.e.Config().MaxMessageSize
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, "too_large", "body exceeds "+strconv.Itoa(limit)+" bytes")
		} else {
			s.fail(w, r, http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
		}
		return nil, false
	}
	if len(body) == 0 {
		s.fail(w, r, http.StatusBadRequest, "bad_request", "empty body: the body is the message data")
		return nil, false
	}
	return body, true
}

// Accepted is the answer of the publish API: the message is accepted into
// the ledger (docs/operations.md says what that promises).
type Accepted struct {
	OK bool `json:"ok"`
	// LocalRecipients is how many connections of this instance were to get
	// the message when it was accepted (the connections, for a broadcast; the
	// subscribers, for a publication; 0 or 1 for a private message). Other
	// instances' recipients are not counted.
	LocalRecipients int    `json:"local_recipients"`
	Instance        string `json:"instance"`
}

// answer maps an engine error to an HTTP status; recipients is what a success
// reports.
func (s *api) answer(w http.ResponseWriter, r *http.Request, err error, recipients int) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusAccepted, Accepted{OK: true, LocalRecipients: recipients, Instance: s.e.InstanceID()})
	case errors.Is(err, engine.ErrQueueFull):
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, http.StatusServiceUnavailable, "overloaded", err.Error())
	case errors.Is(err, engine.ErrShutdown):
		s.fail(w, r, http.StatusServiceUnavailable, "shutting_down", err.Error())
	case errors.Is(err, engine.ErrInvalidChannel):
		s.fail(w, r, http.StatusBadRequest, "bad_channel", err.Error())
	case errors.Is(err, engine.ErrMessageTooLarge):
		s.fail(w, r, http.StatusRequestEntityTooLarge, "too_large", err.Error())
	case errors.Is(err, engine.ErrConnNotFound):
		s.fail(w, r, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, engine.ErrBrokerUnavailable):
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		s.fail(w, r, http.StatusBadGateway, "internal", err.Error())
	}
}

func (s *api) broadcast(w http.ResponseWriter, r *http.Request) {
	if body, ok := s.readBody(w, r); ok {
		n := s.e.Connections()
		s.answer(w, r, s.e.Broadcast(body), n)
	}
}

func (s *api) publish(w http.ResponseWriter, r *http.Request) {
	ch := r.URL.Query().Get("channel")
	if ch == "" {
		s.fail(w, r, http.StatusBadRequest, "bad_request", "missing ?channel=")
		return
	}
	if body, ok := s.readBody(w, r); ok {
		n := s.e.Subscribers(ch)
		s.answer(w, r, s.e.Publish(ch, body), n)
	}
}

func (s *api) send(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("conn")
	if id == "" {
		s.fail(w, r, http.StatusBadRequest, "bad_request", "missing ?conn=")
		return
	}
	if body, ok := s.readBody(w, r); ok {
		err := s.e.Send(id, body)
		n := 0
		if err == nil && s.e.IsLocal(id) {
			n = 1
		}
		s.answer(w, r, err, n)
	}
}

func (s *api) health(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"status": "ok", "instance": s.e.InstanceID(), "connections": s.e.Connections()}
	status := http.StatusOK
	if s.opts.Health != nil {
		degraded, detail := s.opts.Health()
		for k, v := range detail {
			body[k] = v
		}
		if degraded {
			body["status"] = "degraded"
			status = http.StatusServiceUnavailable
		}
	}
	select {
	case <-s.e.Done():
		body["status"], status = "shutting_down", http.StatusServiceUnavailable
	default:
		if s.e.Stats().ShuttingDown {
			body["status"], status = "shutting_down", http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, body)
}

func (s *api) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.e.WritePrometheus(w)
	vm.WriteProcessMetrics(w)
}

// Memory is the process memory reported by /api/stats, so load generators can
// measure bytes per connection without access to the host.
type Memory struct {
	HeapInuse  uint64 `json:"heap_inuse_bytes"`
	HeapAlloc  uint64 `json:"heap_alloc_bytes"`
	StackInuse uint64 `json:"stack_inuse_bytes"`
	GoTotal    uint64 `json:"go_total_bytes"`
	RSS        uint64 `json:"rss_bytes"`
	Goroutines int    `json:"goroutines"`
}

// ReadMemory samples the Go runtime (runtime/metrics, no stop-the-world) and the
// resident set size from /proc/self/statm where available.
func ReadMemory() Memory {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/total:bytes"},
	}
	metrics.Read(samples)
	m := Memory{
		HeapAlloc:  samples[0].Value.Uint64(),
		HeapInuse:  samples[0].Value.Uint64() + samples[1].Value.Uint64(),
		StackInuse: samples[2].Value.Uint64(),
		GoTotal:    samples[3].Value.Uint64(),
		Goroutines: runtime.NumGoroutine(),
		RSS:        readRSS(),
	}
	return m
}

func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

func (s *api) stats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		engine.Stats
		Memory Memory `json:"memory"`
		PID    int    `json:"pid"`
	}{s.e.Stats(), ReadMemory(), os.Getpid()})
}

// cluster answers GET /api/cluster from Options.Cluster, or with this instance
// alone on a single node.
func (s *api) cluster(w http.ResponseWriter, r *http.Request) {
	if s.opts.Cluster == nil {
		n := s.e.Connections()
		writeJSON(w, http.StatusOK, map[string]any{
			"instances":   []map[string]any{{"id": s.e.InstanceID(), "connections": n}},
			"connections": n,
			"self":        s.e.InstanceID(),
		})
		return
	}
	v, err := s.opts.Cluster(r.Context())
	if err != nil {
		s.opts.Logger.Warn("shardhub: listing cluster instances", "err", err)
		s.fail(w, r, http.StatusServiceUnavailable, "unavailable", "cluster registry unavailable: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}
