package engine_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/shardhub/shardhub/engine"
	"github.com/shardhub/shardhub/engine/server"
)

// fleetEnv makes the test binary act as a client fleet in a child process: the
// server's 10,000 sockets and the clients' 10,000 would not fit under this
// machine's 20,000 open files per process together.
const fleetEnv = "SHARDHUB_TEST_FLEET"

type fleetResult struct {
	Connected int    `json:"connected"`
	Complete  int    `json:"complete"` // clients that got every broadcast, in order
	Missing   int64  `json:"missing"`  // broadcasts not received, summed over clients
	Disorder  int64  `json:"disorder"` // out-of-order or duplicate arrivals
	Failure   string `json:"failure"`  // first dial error, if any
}

// TestTenThousandClientsGetEveryBroadcast holds 10,000 real WebSocket clients over
// loopback (in a child process) and checks that each receives every one of a
// burst of broadcasts, in order.
func TestTenThousandClientsGetEveryBroadcast(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 real connections: skipped in -short")
	}
	const clients, burst = 10000, 50
	ts := startServer(t, engine.Config{PingInterval: -1}, server.Options{})

	cmd := exec.Command(os.Args[0], "-test.run=^TestFleetChild$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", fleetEnv, ts.addr, clients, burst))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A generous deadline: 10,000 handshakes under -race on a busy 2-core
	// machine take seconds to minutes; this is not a speed check.
	deadline := time.Now().Add(5 * time.Minute)
	for ts.e.Connections() < clients {
		if time.Now().After(deadline) {
			t.Fatalf("only %d connections after 5 minutes:\n%s", ts.e.Connections(), out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range burst {
		for {
			err := ts.e.Broadcast(fmt.Appendf(nil, `{"seq":%d}`, i))
			if err == nil {
				break
			}
			t.Logf("broadcast %d: %v (retrying)", i, err)
			time.Sleep(10 * time.Millisecond)
		}
	}
	stdin.Close() // tells the fleet the burst is sent
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fleet: %v\n%s", err, out.String())
	}
	var res fleetResult
	for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
		if bytes.HasPrefix(line, []byte("FLEET ")) {
			if err := json.Unmarshal(line[6:], &res); err != nil {
				t.Fatal(err)
			}
		}
	}
	if res.Connected != clients || res.Complete != clients || res.Missing != 0 || res.Disorder != 0 {
		t.Fatalf("fleet result %+v\n%s", res, out.String())
	}
	st := ts.e.Stats()
	if st.Forced != 0 || st.Dropped != 0 {
		t.Fatalf("server dropped or evicted: %+v", st)
	}
	t.Logf("%d clients × %d broadcasts delivered, in order; %d deliveries counted", clients, burst, st.Deliveries)
}

// TestFleetChild is the client side of TestTenThousandClientsGetEveryBroadcast;
// it does nothing unless started by it.
func TestFleetChild(t *testing.T) {
	spec := os.Getenv(fleetEnv)
	if spec == "" {
		t.Skip("runs only as the child of TestTenThousandClientsGetEveryBroadcast")
	}
	parts := bytes.Split([]byte(spec), []byte(","))
	addr := string(parts[0])
	n, _ := strconv.Atoi(string(parts[1]))
	burst, _ := strconv.Atoi(string(parts[2]))

	var res fleetResult
	counters := make([]fleetClient, n)
	var mu sync.Mutex
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range counters {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := &counters[i]
			ws, _, err := gws.NewClient(c, &gws.ClientOption{Addr: "ws://" + addr + "/ws", ReadBufferSize: 512})
			if err != nil {
				mu.Lock()
				if res.Failure == "" {
					res.Failure = err.Error()
				}
				mu.Unlock()
				return
			}
			c.ws = ws
			go ws.ReadLoop()
		}()
	}
	wg.Wait()
	for i := range counters {
		if counters[i].ws != nil {
			res.Connected++
		}
	}
	_, _ = os.Stdin.Read(make([]byte, 1)) // EOF once the parent has broadcast
	deadline := time.Now().Add(5 * time.Minute)
	for {
		complete := 0
		for i := range counters {
			if counters[i].next.Load() == int64(burst) {
				complete++
			}
		}
		if complete == res.Connected || time.Now().After(deadline) {
			res.Complete = complete
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range counters {
		res.Missing += int64(burst) - counters[i].next.Load()
		res.Disorder += counters[i].disorder.Load()
		if counters[i].ws != nil {
			counters[i].ws.NetConn().Close()
		}
	}
	b, _ := json.Marshal(res)
	fmt.Printf("FLEET %s\n", b)
}

// fleetClient counts broadcasts {"seq":i} and checks they arrive in order.
type fleetClient struct {
	gws.BuiltinEventHandler
	ws       *gws.Conn
	next     atomic.Int64
	disorder atomic.Int64
}

func (c *fleetClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	var v struct {
		Type string
		Data struct{ Seq *int64 }
	}
	if json.Unmarshal(m.Bytes(), &v) != nil || v.Type != "message" || v.Data.Seq == nil {
		return // the welcome
	}
	if *v.Data.Seq == c.next.Load() {
		c.next.Add(1)
	} else {
		c.disorder.Add(1)
	}
}
