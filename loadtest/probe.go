package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shardhub/shardhub/loadtest/report"
)

// probe reads one server under test: its Prometheus metrics and its memory,
// from its HTTP endpoints or, for a bare process, from /proc/PID. Every read
// tolerates a server that lacks the endpoint.
type probe struct {
	instance    string
	base        string // API base URL; "" for a PID probe
	pid         int
	metricsPath string
	statsPath   string
	client      *http.Client
	missing     map[string]bool // endpoints found missing, to warn once
}

func newProbes(cfg Config, client *http.Client) []*probe {
	var ps []*probe
	seen := map[string]bool{}
	for _, b := range cfg.APIs {
		if seen[b] {
			continue
		}
		seen[b] = true
		ps = append(ps, &probe{instance: b, base: b, metricsPath: cfg.MetricsPath, statsPath: cfg.StatsPath, client: client, missing: map[string]bool{}})
	}
	for _, pid := range cfg.ServerPIDs {
		ps = append(ps, &probe{instance: "pid " + strconv.Itoa(pid), pid: pid, missing: map[string]bool{}})
	}
	return ps
}

// scrape returns the server's Prometheus samples, or nil.
// A PID probe reads its process's CPU time from /proc instead, under the same
// name, so servers that share one address (SO_REUSEPORT) are each counted.
func (p *probe) scrape(ctx context.Context) map[string]float64 {
	if p.pid != 0 {
		if cpu, ok := procCPU(p.pid); ok {
			return map[string]float64{"process_cpu_seconds_total": cpu}
		}
		return nil
	}
	if p.base == "" || p.metricsPath == "-" {
		return nil
	}
	body, err := p.get(ctx, p.metricsPath)
	if err != nil {
		return nil
	}
	defer body.Close()
	return parsePrometheus(body)
}

// memory samples the server's memory, or returns false.
func (p *probe) memory(ctx context.Context) (report.MemorySample, bool) {
	if p.pid != 0 {
		rss, ok := procRSS(p.pid)
		return report.MemorySample{RSS: rss}, ok
	}
	if p.statsPath == "-" {
		return report.MemorySample{}, false
	}
	body, err := p.get(ctx, p.statsPath)
	if err != nil {
		return report.MemorySample{}, false
	}
	defer body.Close()
	var st struct {
		Memory *struct {
			HeapInuse  uint64 `json:"heap_inuse_bytes"`
			StackInuse uint64 `json:"stack_inuse_bytes"`
			GoTotal    uint64 `json:"go_total_bytes"`
			RSS        uint64 `json:"rss_bytes"`
			Goroutines int    `json:"goroutines"`
		} `json:"memory"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 16<<20)).Decode(&st); err != nil || st.Memory == nil {
		p.missing[p.statsPath] = true
		return report.MemorySample{}, false
	}
	m := st.Memory
	return report.MemorySample{HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, GoTotal: m.GoTotal, RSS: m.RSS, Goroutines: m.Goroutines}, true
}

func (p *probe) get(ctx context.Context, path string) (io.ReadCloser, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		cancel()
		p.missing[path] = true
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		p.missing[path] = true
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return struct {
		io.Reader
		io.Closer
	}{resp.Body, closerFunc(func() error { cancel(); return resp.Body.Close() })}, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// parsePrometheus reads the text exposition format into "name{labels}" →
// value. Comments, histograms' structure and timestamps are ignored.
func parsePrometheus(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var name, rest string
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			name, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexAny(line, " \t"); i >= 0 {
			name, rest = line[:i], line[i:]
		} else {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] = v
	}
	return out
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procCPU reads a process's user + system CPU seconds from /proc/PID/stat.
func procCPU(pid int) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces and parentheses: the fields
	// that follow start after its last ')'. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return float64(ut+st) / clockTicks, true
}

// procRSS reads VmRSS from /proc/PID/status.
func procRSS(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				return kb * 1024, err == nil
			}
		}
	}
	return 0, false
}
