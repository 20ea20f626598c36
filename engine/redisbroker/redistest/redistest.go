// Package redistest starts throwaway redis-server processes for tests: on a
// free loopback port, without persistence, stopped when the test ends. It never
// touches a Redis already running on the machine. Besides starting and
// stopping, it injects the faults a broker must survive: a crash (SIGKILL), a
// restart (empty), a freeze (SIGSTOP/SIGCONT), CLIENT PAUSE and DEBUG SLEEP.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RequireEnv is the environment variable that turns a missing redis-server
// into a test failure instead of a skip (CI sets it).
const RequireEnv = "SHARDHUB_REQUIRE_REDIS"

// Server is one redis-server process.
type Server struct {
	tb     testing.TB
	bin    string
	dir    string
	port   int
	client *redis.Client // for inspection and admin commands; survives restarts

	mu      sync.Mutex // guards cmd and started.
	cmd     *exec.Cmd  // nil while stopped
	started int        // how many times the process was started
}

// Start runs a redis-server from PATH on a free loopback port, with no RDB
// and no AOF, and stops it in tb.Cleanup. Without a binary it skips the test
// loudly, or fails it when SHARDHUB_REQUIRE_REDIS=1.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redistest: NO redis-server IN PATH: skipping a test that needs a real Redis " +
			"(install it, e.g. apt-get install redis-server; set " + RequireEnv + "=1 to make this a failure)"
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), port: freePort(tb)}
	s.client = redis.NewClient(&redis.Options{
		Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, PoolSize: 4,
	})
	tb.Cleanup(func() {
		s.Stop()
		_ = s.client.Close()
	})
	s.start()
	return s
}

// Addr returns host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL returns the redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a go-redis client of the server, for tests that inspect it.
// It is closed when the test ends and works across restarts.
func (s *Server) Client() *redis.Client { return s.client }

func (s *Server) start() {
	s.tb.Helper()
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--protected-mode", "no",
		"--enable-debug-command", "local", // DEBUG SLEEP, from loopback only
		"--loglevel", "warning",
	)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redistest: starting redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.started++
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.ping() == nil {
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.tb.Fatalf("redistest: redis-server on %s did not answer PING within 10s", s.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.client.Ping(ctx).Err()
}

func (s *Server) process() *os.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatal("redistest: the server is not running")
	}
	return s.cmd.Process
}

// Stop kills the server (SIGKILL: an outage, not a clean shutdown) and waits
// for it. It is idempotent; a frozen server is killed too.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Restart starts the server again on the same port, empty (no persistence).
// A running server is killed first.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
}

// Freeze stops the process (SIGSTOP): connections stay open, the kernel
// still accepts new ones, nothing is answered. Thaw resumes it.
func (s *Server) Freeze() {
	s.tb.Helper()
	if err := s.process().Signal(syscall.SIGSTOP); err != nil {
		s.tb.Fatalf("redistest: SIGSTOP: %v", err)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() {
	s.tb.Helper()
	if err := s.process().Signal(syscall.SIGCONT); err != nil {
		s.tb.Fatalf("redistest: SIGCONT: %v", err)
	}
}

// ClientPause runs CLIENT PAUSE for d: Redis holds every client's commands
// (PUBLISH included) until it ends.
func (s *Server) ClientPause(d time.Duration) {
	s.tb.Helper()
	if err := s.Do("CLIENT", "PAUSE", d.Milliseconds()); err != nil {
		s.tb.Fatalf("redistest: CLIENT PAUSE: %v", err)
	}
}

// DebugSleep runs DEBUG SLEEP for d on its own connection and returns at
// once: Redis is busy (answers nothing) until it ends. The returned channel
// closes when the command has returned.
func (s *Server) DebugSleep(d time.Duration) <-chan struct{} {
	s.tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, ReadTimeout: d + 10*time.Second})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		_ = c.Do(context.Background(), "DEBUG", "SLEEP", fmt.Sprintf("%.3f", d.Seconds())).Err()
	}()
	return done
}

// Do runs one command and returns its error (its result, with Client).
func (s *Server) Do(args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.client.Do(ctx, args...).Err()
}

// Keys returns how many keys the server holds (DBSIZE).
func (s *Server) Keys() (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.client.DBSize(ctx).Result()
}

// freePort asks the kernel for a free loopback port. Another process could take
// it before redis-server binds it; the window is small and a clash fails loudly.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
