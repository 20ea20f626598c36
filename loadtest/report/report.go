// Package report is the versioned JSON document that shardhub's load generator
// and benchmarks write, its self-contained HTML rendering, and the comparison of
// several reports (`shardhub compare`).
//
// A report is deliberately generic: whatever produced it, its results are a flat
// list of named Metrics, each with a unit and the direction that is better. Compare
// matches metrics by name, so a load-test report compares with a benchmark report
// as long as they share metric names, and warns when the reports' Workloads (the
// settings that define what was measured) differ. The optional sections
// (Outcome, Latency, Timeseries, Phases, Server, Errors) carry the detail that
// the HTML report draws.
//
// A producer builds a report like this:
//
//	r := report.New("bench", "fanout-10k")
//	r.SetConfig(myFlags)
//	r.SetWorkload("conns", 10000, "rate", 100)
//	r.AddMetric("deliveries_per_sec", 1.2e6, "msg/s", report.HigherIsBetter)
//	r.AddMetric("ns_per_delivery", 830, "ns", report.LowerIsBetter)
//	r.Latency = report.LatencyFromHistogram(h, "us")
//	err := r.WriteFile("fanout.json") // and r.WriteHTMLFile("fanout.html")
//
// Nothing in this package is safe for concurrent mutation: build a report in one
// goroutine, then read it from as many as you like.
package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
)

// Schema is the version string every report carries in its "schema" field.
// Additive changes (new optional fields, new metric names) keep the version;
// anything that changes the meaning of an existing field bumps it.
const Schema = "shardhub.report/v1"

// Report kinds written by shardhub's tools. Other producers may use their own.
const (
	KindLoadtest = "loadtest"
	KindBench    = "bench"
)

// Better says which direction of a metric is an improvement.
type Better string

// Directions of Metric.Better.
const (
	// HigherIsBetter marks throughput-like metrics (deliveries/s, conns/s).
	HigherIsBetter Better = "higher"
	// LowerIsBetter marks cost-like metrics (latency, loss, CPU per message).
	LowerIsBetter Better = "lower"
	// Informational marks metrics with no better direction (counts, settings
	// echoed as results); compare shows their change but never judges it.
	Informational Better = ""
)

// Metric is one named result. Names are snake_case and end in their unit where
// that helps (latency_p99_us, cpu_ns_per_delivery); compare matches them
// exactly, so keep a name's meaning stable across versions.
type Metric struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
	Better Better  `json:"better,omitempty"`
	// Help is a one-line description shown in the HTML report.
	Help string `json:"help,omitempty"`
}

// Report is one run's results. Fields tagged omitempty are optional; a reader
// must tolerate their absence and ignore fields it does not know.
type Report struct {
	// Schema is always the Schema constant when written by this package.
	Schema string `json:"schema"`
	// Kind is what produced the report: KindLoadtest, KindBench, or another tool's.
	Kind string `json:"kind"`
	// Name labels the run in tables and charts.
	Name string `json:"name"`
	// Started is when the run began.
	Started time.Time `json:"started"`
	// DurationSeconds is how long the whole run took.
	DurationSeconds float64 `json:"duration_seconds"`
	// Env is where the run happened; compare warns when environments differ.
	Env Env `json:"env"`
	// Config is the producer's own settings, kept verbatim (see SetConfig).
	Config json.RawMessage `json:"config,omitempty"`
	// Workload is the settings that define what was measured (scenario,
	// connections, rate, sizes, durations), as text; compare warns when two
	// reports' workloads differ, since their metrics then measure different
	// things.
	Workload map[string]string `json:"workload,omitempty"`
	// Outcome is the producer's judgement of the run, when it makes one.
	Outcome *Outcome `json:"outcome,omitempty"`
	// Metrics are the results compare works on.
	Metrics []Metric `json:"metrics"`
	// Latency is the main latency distribution, if the run measured one.
	Latency *Latency `json:"latency,omitempty"`
	// Timeseries are values sampled during the run (deliveries/s, conns, p99…).
	Timeseries []Series `json:"timeseries,omitempty"`
	// Phases are named spans of the run (the measured phase, the drain…), in
	// seconds since Started; the charts over time shade them.
	Phases []Span `json:"phases,omitempty"`
	// Errors counts failures by kind (connect_timeout, http_503, closed_1013…).
	Errors map[string]int64 `json:"errors,omitempty"`
	// Server holds what was scraped from the servers under test.
	Server []Server `json:"server,omitempty"`
	// Notes are human-readable remarks: warnings, interruptions, caveats.
	Notes []string `json:"notes,omitempty"`
}

// Series is one value sampled over time: T[i] seconds after the run started the
// value was V[i]. T and V have the same length.
type Series struct {
	Name string    `json:"name"`
	Unit string    `json:"unit,omitempty"`
	T    []float64 `json:"t"`
	V    []float64 `json:"v"`
}

// Outcome is a producer's judgement of its run: whether it passed the checks
// it was given, in one line, and each failed check.
type Outcome struct {
	Pass     bool     `json:"pass"`
	Summary  string   `json:"summary"`
	Failures []string `json:"failures,omitempty"`
}

// Span is a named part of a run, from Start to End seconds after it started.
type Span struct {
	Name  string  `json:"name"`
	Start float64 `json:"start_seconds"`
	End   float64 `json:"end_seconds"`
}

// Server is what was learnt about one server instance under test. Before and
// After are its Prometheus samples ("name{labels}" → value) at the start and the
// end of the run; Memory is sampled during it.
type Server struct {
	Instance string             `json:"instance"`
	Before   map[string]float64 `json:"before,omitempty"`
	After    map[string]float64 `json:"after,omitempty"`
	Memory   []MemorySample     `json:"memory,omitempty"`
}

// Delta returns After[name] − Before[name] and whether After has the sample.
func (s Server) Delta(name string) (float64, bool) {
	a, ok := s.After[name]
	if !ok {
		return 0, false
	}
	return a - s.Before[name], true
}

// MemorySample is one reading of a server's memory, T seconds into the run while
// Conns connections were open.
type MemorySample struct {
	T          float64 `json:"t"`
	Conns      int64   `json:"conns"`
	HeapInuse  uint64  `json:"heap_inuse_bytes,omitempty"`
	StackInuse uint64  `json:"stack_inuse_bytes,omitempty"`
	GoTotal    uint64  `json:"go_total_bytes,omitempty"`
	RSS        uint64  `json:"rss_bytes,omitempty"`
	Goroutines int     `json:"goroutines,omitempty"`
}

// New returns an empty report of kind named name, started now, with the
// environment of this process collected.
func New(kind, name string) *Report {
	return &Report{
		Schema:  Schema,
		Kind:    kind,
		Name:    name,
		Started: time.Now().UTC().Truncate(time.Millisecond),
		Env:     CollectEnv(),
		Metrics: []Metric{},
	}
}

// SetConfig stores v (any JSON-marshalable settings struct) as the report's
// config.
func (r *Report) SetConfig(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("report: config: %w", err)
	}
	r.Config = b
	return nil
}

// SetWorkload records the settings that define what was measured, as
// alternating names and values (SetWorkload("conns", 1000, "rate", 20.0));
// values are formatted with %v, and a time.Duration reads like "10s".
func (r *Report) SetWorkload(kv ...any) {
	if r.Workload == nil {
		r.Workload = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		r.Workload[fmt.Sprint(kv[i])] = fmt.Sprint(kv[i+1])
	}
}

// AddMetric appends a metric, or replaces the value of the one with that name.
// NaN and infinities are stored as 0 (JSON has no such numbers) with a note.
func (r *Report) AddMetric(name string, value float64, unit string, better Better) {
	r.AddMetricHelp(name, value, unit, better, "")
}

// AddMetricHelp is AddMetric with a one-line description.
func (r *Report) AddMetricHelp(name string, value float64, unit string, better Better, help string) {
	if math.IsNaN(value) || math.IsInf(value, 0) {
		r.Notes = append(r.Notes, fmt.Sprintf("metric %s was %v, stored as 0", name, value))
		value = 0
	}
	m := Metric{Name: name, Value: value, Unit: unit, Better: better, Help: help}
	for i := range r.Metrics {
		if r.Metrics[i].Name == name {
			r.Metrics[i] = m
			return
		}
	}
	r.Metrics = append(r.Metrics, m)
}

// Metric returns the metric called name.
func (r *Report) Metric(name string) (Metric, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// AddSeries appends a time series; t and v must have the same length.
func (r *Report) AddSeries(name, unit string, t, v []float64) {
	r.Timeseries = append(r.Timeseries, Series{Name: name, Unit: unit, T: t, V: v})
}

// Series returns the time series called name.
func (r *Report) Series(name string) (Series, bool) {
	for _, s := range r.Timeseries {
		if s.Name == name {
			return s, true
		}
	}
	return Series{}, false
}

// Notef appends a formatted note.
func (r *Report) Notef(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// WriteFile writes r as JSON to path.
func (r *Report) WriteFile(path string) error {
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// Decode reads one report and checks its schema: a report of another major
// version returns ErrSchema.
func Decode(rd io.Reader) (*Report, error) {
	var r Report
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("report: decoding: %w", err)
	}
	if !compatible(r.Schema) {
		return nil, fmt.Errorf("%w: %q (this version reads %q)", ErrSchema, r.Schema, Schema)
	}
	if r.Metrics == nil {
		r.Metrics = []Metric{}
	}
	return &r, nil
}

// ReadFile reads the report at path.
func ReadFile(path string) (*Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// compatible accepts this schema and its minor revisions ("…/v1", "…/v1.2").
func compatible(s string) bool {
	return s == Schema || strings.HasPrefix(s, Schema+".")
}
