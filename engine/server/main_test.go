package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/redisbroker"
	"github.com/shardhub/shardhub/engine/server"
)

// The tests that kill and restart a server run it in a child process: this
// test binary again, told by childEnv to serve instead of testing. A real
// process dies the way a crashed server does (SIGKILL: no close frame, no
// goodbye to Redis), which an in-process server cannot imitate.
const (
	childEnv      = "SHARDHUB_TEST_CHILD_SERVER" // "1" in the child
	childAddrEnv  = "SHARDHUB_TEST_CHILD_ADDR"   // listen address
	childRedisEnv = "SHARDHUB_TEST_CHILD_REDIS"  // Redis URL; empty = single node
	childIDEnv    = "SHARDHUB_TEST_CHILD_ID"     // instance id
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runChildServer())
	}
	os.Exit(m.Run())
}

// historyRules are the history channels of the recovery tests: "hist."
// keeps plenty, "tiny." so little that an outage outruns it.
var historyRules = []redisbroker.HistoryRule{
	{Prefix: "hist.", Size: 10000, TTL: time.Minute},
	{Prefix: "tiny.", Size: 5, TTL: time.Minute},
}

// newBrokeredEngine returns an engine on the Redis at url with historyRules,
// and the server options that show its health and cluster.
func newBrokeredEngine(url, id string, log *slog.Logger) (*engine.Engine, server.Options, error) {
	rb, err := redisbroker.New(redisbroker.Config{URL: url, History: historyRules, Logger: log})
	if err != nil {
		return nil, server.Options{}, err
	}
	e, err := engine.New(engine.Config{Broker: rb, InstanceID: id, Logger: log})
	if err != nil {
		return nil, server.Options{}, err
	}
	return e, server.Options{Logger: log, Health: rb.Health, Cluster: rb.Cluster}, nil
}

// runChildServer serves server.Handler, and the pages of testdata/client under
// /test/, until killed or orphaned.
func runChildServer() int {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("SHARDHUB_TEST_CHILD_LOG") == "1" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var (
		e    *engine.Engine
		opts = server.Options{Logger: log}
		err  error
	)
	if url := os.Getenv(childRedisEnv); url != "" {
		e, opts, err = newBrokeredEngine(url, os.Getenv(childIDEnv), log)
	} else {
		e, err = engine.New(engine.Config{InstanceID: os.Getenv(childIDEnv), Logger: log})
	}
	if err != nil {
		os.Stderr.WriteString("child server: " + err.Error() + "\n")
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle("/", server.Handler(e, opts))
	mux.Handle("GET /test/", http.StripPrefix("/test/", http.FileServer(http.Dir("testdata/client"))))
	ln, err := net.Listen("tcp", os.Getenv(childAddrEnv))
	if err != nil {
		os.Stderr.WriteString("child server: " + err.Error() + "\n")
		return 1
	}
	// Exit when the test that started us is gone, killed or not.
	parent := os.Getppid()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(3)
			}
		}
	}()
	_ = http.Serve(ln, mux)
	return 1
}

// child is a server running in a child process on a fixed address, so that a
// restarted one is where its clients left it.
type child struct {
	tb    testing.TB
	addr  string
	env   []string
	cmd   *exec.Cmd
	waitc chan error
}

// startChild starts a child server on a free loopback port; redisURL empty
// means a single node.
func startChild(tb testing.TB, redisURL, id string) *child {
	tb.Helper()
	c := &child{tb: tb, addr: freeAddr(tb)}
	c.env = append(os.Environ(), childEnv+"=1", childAddrEnv+"="+c.addr, childRedisEnv+"="+redisURL, childIDEnv+"="+id)
	c.start()
	tb.Cleanup(c.kill)
	return c
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs the child and waits until it answers /healthz with 200 (with
// Redis: its subscriptions are live).
func (c *child) start() {
	c.tb.Helper()
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = c.env
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		c.tb.Fatal(err)
	}
	c.waitc = make(chan error, 1)
	go func(cmd *exec.Cmd, waitc chan error) { waitc <- cmd.Wait() }(c.cmd, c.waitc)
	deadline := time.Now().Add(waitLong)
	for {
		resp, err := http.Get("http://" + c.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-c.waitc:
			c.tb.Fatalf("child server exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("child server on %s not healthy within %v (last error %v)", c.addr, waitLong, err)
		}
	}
}

// kill ends the child with SIGKILL, as a crash would, and reaps it.
func (c *child) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.waitc
	c.cmd = nil
}

// waitLong bounds every wait of these tests: generous, for a busy machine and
// the race detector.
var waitLong = func() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("SHARDHUB_TEST_WAIT_S")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 90 * time.Second
}()

// startEngine runs an engine with server.Handler on a loopback port (and extra
// routes from more, when not nil) and returns it with its address.
func startEngine(tb testing.TB, e *engine.Engine, opts server.Options, more func(mux *http.ServeMux)) string {
	tb.Helper()
	mux := http.NewServeMux()
	mux.Handle("/", server.Handler(e, opts))
	if more != nil {
		more(mux)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = e.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// quietLogger discards; tests look at behaviour, not log lines.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
