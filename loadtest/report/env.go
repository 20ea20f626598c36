package report

import (
	"bufio"
	"os"
	"runtime"
	"strings"
)

// Env describes where a report was produced, so that compare can tell apart
// runs that differ by code from runs that differ by machine.
type Env struct {
	Host       string `json:"host"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Kernel     string `json:"kernel,omitempty"`
	CPUModel   string `json:"cpu_model,omitempty"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	// Module is the main module's version as built ("(devel)" from a checkout).
	Module string `json:"module,omitempty"`
	// GitRevision is the commit the binary was built from (see CollectBuild;
	// empty when the binary does not know); GitDirty says the tree had
	// uncommitted changes, where that is known.
	GitRevision string `json:"git_revision,omitempty"`
	GitDirty    bool   `json:"git_dirty,omitempty"`
	// RlimitNofile is the open-files limit (soft, hard) of the producing process.
	RlimitNofile [2]uint64 `json:"rlimit_nofile"`
	// Args is the producing command line.
	Args []string `json:"args,omitempty"`
	// Sysctl holds kernel settings that bound socket counts
	// (net.ipv4.ip_local_port_range, net.core.somaxconn, fs.file-max…).
	Sysctl map[string]string `json:"sysctl,omitempty"`
}

// CollectEnv describes the current process and machine. Fields it cannot learn
// stay empty; it never fails.
func CollectEnv() Env {
	e := Env{
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		Args:       append([]string(nil), os.Args...),
	}
	e.Host, _ = os.Hostname()
	e.Kernel = readTrim("/proc/sys/kernel/osrelease")
	e.CPUModel = cpuModel()
	e.RlimitNofile = rlimitNofile()
	b := CollectBuild()
	e.Module, e.GitRevision, e.GitDirty = b.Module, b.Revision, b.Dirty
	e.Sysctl = map[string]string{}
	for key, path := range map[string]string{
		"net.ipv4.ip_local_port_range": "/proc/sys/net/ipv4/ip_local_port_range",
		"net.core.somaxconn":           "/proc/sys/net/core/somaxconn",
		"fs.file-max":                  "/proc/sys/fs/file-max",
		"fs.nr_open":                   "/proc/sys/fs/nr_open",
	} {
		if v := readTrim(path); v != "" {
			e.Sysctl[key] = strings.Join(strings.Fields(v), " ")
		}
	}
	if len(e.Sysctl) == 0 {
		e.Sysctl = nil
	}
	return e
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
