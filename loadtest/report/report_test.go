package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// sample returns a report with every section filled.
func sample(tb testing.TB, name string, metrics ...Metric) *Report {
	tb.Helper()
	r := New(KindLoadtest, name)
	r.Started = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	r.DurationSeconds = 12.5
	if err := r.SetConfig(map[string]any{"conns": 1000, "urls": []string{"ws://127.0.0.1:8080/ws"}}); err != nil {
		tb.Fatal(err)
	}
	for _, m := range metrics {
		r.AddMetricHelp(m.Name, m.Value, m.Unit, m.Better, m.Help)
	}
	h := hdrhistogram.New(1, 60e6, 3)
	for i := int64(1); i <= 1000; i++ {
		_ = h.RecordValue(i * 10)
	}
	r.Latency = LatencyFromHistogram(h, "us")
	r.AddSeries("deliveries_per_sec", "msg/s", []float64{1, 2, 3}, []float64{100, 250.5, 90})
	r.Errors = map[string]int64{"connect_timeout": 3}
	r.Server = []Server{{
		Instance: "http://127.0.0.1:8080",
		Before:   map[string]float64{`shardhub_dropped_broadcasts_total`: 1},
		After:    map[string]float64{`shardhub_dropped_broadcasts_total`: 4, `shardhub_errors_total{kind="bad_json"}`: 2},
		Memory:   []MemorySample{{T: 1, Conns: 10, HeapInuse: 1 << 20, RSS: 8 << 20, Goroutines: 12}},
	}}
	r.Notef("note %d", 1)
	return r
}

func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	r := sample(t, "roundtrip",
		Metric{Name: "deliveries_per_sec", Value: 123456.5, Unit: "msg/s", Better: HigherIsBetter, Help: "h"},
		Metric{Name: "latency_p99_us", Value: 870, Unit: "us", Better: LowerIsBetter},
		Metric{Name: "conns_target", Value: 1000, Unit: "conns"})
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	// Config is raw JSON: compare it compacted, then the rest field by field.
	var want, have bytes.Buffer
	_ = json.Compact(&want, r.Config)
	_ = json.Compact(&have, got.Config)
	if want.String() != have.String() {
		t.Errorf("config: got %s, want %s", have.String(), want.String())
	}
	got.Config, r.Config = nil, nil
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip changed the report:\n got %+v\nwant %+v", got, r)
	}
	if got.Schema != Schema {
		t.Errorf("schema = %q", got.Schema)
	}
	// Re-encoding the decoded report gives the same bytes.
	var again bytes.Buffer
	got.Config = json.RawMessage(have.String())
	r.Config = json.RawMessage(have.String())
	_ = got.WriteJSON(&again)
	var first bytes.Buffer
	_ = r.WriteJSON(&first)
	if again.String() != first.String() {
		t.Error("encoding is not stable across a round trip")
	}
}

func TestDecodeSchema(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc string
		wantErr   error
	}{
		{"current", `{"schema":"shardhub.report/v1","kind":"bench","name":"x","metrics":[]}`, nil},
		{"minor revision", `{"schema":"shardhub.report/v1.3","kind":"bench","name":"x"}`, nil},
		{"next major", `{"schema":"shardhub.report/v2","kind":"bench","name":"x"}`, ErrSchema},
		{"missing", `{"kind":"bench"}`, ErrSchema},
		{"other tool", `{"schema":"k6/summary"}`, ErrSchema},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := Decode(strings.NewReader(tt.doc))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && r.Metrics == nil {
				t.Error("Metrics is nil after decoding")
			}
		})
	}
	if _, err := Decode(strings.NewReader("not json")); err == nil {
		t.Error("garbage decoded")
	}
}

func TestAddMetric(t *testing.T) {
	t.Parallel()
	r := New(KindBench, "m")
	r.AddMetric("a", 1, "x", HigherIsBetter)
	r.AddMetric("b", 2, "x", LowerIsBetter)
	r.AddMetric("a", 3, "x", HigherIsBetter) // replaces, keeps the position
	r.AddMetric("nan", math.NaN(), "", Informational)
	if len(r.Metrics) != 3 || r.Metrics[0].Name != "a" || r.Metrics[0].Value != 3 {
		t.Fatalf("metrics = %+v", r.Metrics)
	}
	if m, ok := r.Metric("nan"); !ok || m.Value != 0 || len(r.Notes) != 1 {
		t.Errorf("NaN metric = %+v, notes %v", m, r.Notes)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("report with a NaN metric does not marshal: %v", err)
	}
}

func TestCollectEnv(t *testing.T) {
	t.Parallel()
	e := CollectEnv()
	if e.Cores < 1 || e.GOMAXPROCS < 1 || e.GoVersion == "" || e.OS == "" || len(e.Args) == 0 {
		t.Errorf("env incomplete: %+v", e)
	}
}

func TestLatencyFromHistogram(t *testing.T) {
	t.Parallel()
	if LatencyFromHistogram(hdrhistogram.New(1, 1000, 3), "us") != nil {
		t.Error("empty histogram gave a latency")
	}
	h := hdrhistogram.New(1, 60e6, 3)
	for v := int64(1); v <= 100; v++ {
		_ = h.RecordValue(v)
	}
	l := LatencyFromHistogram(h, "us")
	if l.Count != 100 || l.Min != 1 || l.Max != 100 {
		t.Fatalf("latency = %+v", l)
	}
	if p50, _ := l.At(50); p50 != 50 {
		t.Errorf("p50 = %v", p50)
	}
	if p99, _ := l.At(99); p99 != 99 {
		t.Errorf("p99 = %v", p99)
	}
	var n int64
	prev := 0.0
	for _, b := range l.Buckets {
		if b.Le <= prev {
			t.Errorf("buckets not ascending: %+v", l.Buckets)
		}
		prev = b.Le
		n += b.Count
	}
	if n != 100 {
		t.Errorf("buckets hold %d samples, want 100", n)
	}
	// 1-2-5 buckets: ≤1, ≤2, ≤5, ≤10, ≤20, ≤50, ≤100.
	want := []Bucket{{1, 1}, {2, 1}, {5, 3}, {10, 5}, {20, 10}, {50, 30}, {100, 50}}
	if !reflect.DeepEqual(l.Buckets, want) {
		t.Errorf("buckets = %+v, want %+v", l.Buckets, want)
	}
}

// TestLatencySpectrumStopsAtTheSamples: 50 samples tell percentiles up to the
// 98th; the chart must not draw a tail out to 99.999 % it never measured.
func TestLatencySpectrumStopsAtTheSamples(t *testing.T) {
	t.Parallel()
	h := hdrhistogram.New(1, 60e6, 3)
	for v := int64(1); v <= 50; v++ {
		_ = h.RecordValue(v * 100)
	}
	l := LatencyFromHistogram(h, "us")
	last := l.Percentiles[len(l.Percentiles)-1]
	before := l.Percentiles[len(l.Percentiles)-2]
	if last.P != 100 || last.Value != l.Max || before.P != 97.5 {
		t.Errorf("spectrum of 50 samples ends %+v, %+v; want 97.5 then the maximum at 100", before, last)
	}
}

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(struct {
		D Duration `json:"d"`
	}{Duration(90 * time.Second)})
	if err != nil || string(b) != `{"d":"1m30s"}` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
	for in, want := range map[string]time.Duration{`"10s"`: 10 * time.Second, `10000000000`: 10 * time.Second, `"250ms"`: 250 * time.Millisecond, `0`: 0} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("unmarshal %s = %v, %v; want %v", in, time.Duration(d), err, want)
		}
	}
	var d Duration
	for _, bad := range []string{`"ten"`, `true`, `1.5`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("unmarshal %s succeeded", bad)
		}
	}
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"./bin/shardhub", "loadtest", "--conns", "100"}, "./bin/shardhub loadtest --conns 100"},
		{[]string{"shardhub", "--ready-match", `"type":"welcome"`}, `shardhub --ready-match '"type":"welcome"'`},
		{[]string{"x", "it's", "", "a b", "$HOME"}, `x 'it'\''s' '' 'a b' '$HOME'`},
		{[]string{"--url", "ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws"}, "--url ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws"},
	}
	for _, tt := range tests {
		if got := shellQuote(tt.args); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.args, got, tt.want)
		}
	}
}

func TestFormatValue(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{0: "0", 12000: "12,000", -1234567: "-1,234,567", 4354.3: "4,354.3", 875.5: "875.5",
		0.242: "0.242", 0.15: "0.150", 20147.25: "20,147.2", -0.5: "-0.500", 1e16: "10000000G"} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
}
