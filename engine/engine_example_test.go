package engine_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/shardhub/shardhub/engine"
)

// printer is a transport that hands each frame's payload to a channel, standing
// in for a WebSocket client in these examples.
type printer chan string

func (p printer) TryWrite(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		n += len(b)
		hdr := 2
		if b[1]&0x7F == 126 {
			hdr = 4
		}
		p <- string(b[hdr:])
	}
	return n, nil
}
func (p printer) Write(bufs [][]byte, _ time.Time) (int, error) { return p.TryWrite(bufs) }
func (p printer) Close() error                                  { return nil }

func ExampleEngine_Publish() {
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		panic(err)
	}
	defer e.Shutdown(context.Background())

	out := make(printer, 8)
	c, _ := e.Attach("reader-1", out)
	_, _ = c.Subscribe("scores")

	_ = e.Publish("scores", []byte(`{"home":2,"away":1}`))
	_ = e.Publish("weather", []byte(`"sunny"`)) // nobody subscribed: costs nothing
	fmt.Println(<-out)
	// Output: {"type":"message","channel":"scores","data":{"home":2,"away":1}}
}

func ExampleEngine_Broadcast() {
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		panic(err)
	}
	defer e.Shutdown(context.Background())

	out := make(printer, 8)
	_, _ = e.Attach("", out)
	_ = e.Broadcast([]byte("maintenance at 22:00")) // not JSON: sent as a JSON string
	fmt.Println(<-out)
	// Output: {"type":"message","data":"maintenance at 22:00"}
}

func ExampleEngine_Send() {
	e, err := engine.New(engine.Config{Logger: quietLogger()})
	if err != nil {
		panic(err)
	}
	defer e.Shutdown(context.Background())

	out := make(printer, 8)
	_, _ = e.Attach("user-42", out)
	_ = e.Send("user-42", []byte(`{"alert":"your build passed"}`))
	fmt.Println(<-out)
	fmt.Println(e.Send("user-43", []byte(`1`)))
	// Output:
	// {"type":"private","data":{"alert":"your build passed"}}
	// shardhub: connection not found
}

// An engine is an http.Handler: mount it where clients connect.
func ExampleEngine_ServeHTTP() {
	e, err := engine.New(engine.Config{
		AllowedOrigins: []string{"https://app.example.com"},
		Authenticate: func(r *http.Request) (string, error) {
			return r.Header.Get("X-User"), nil // your session check here
		},
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", e)
	_ = mux // http.ListenAndServe(":8080", mux)
	fmt.Println(e.NumShards() > 0)
	_ = e.Shutdown(context.Background())
	// Output: true
}

func ExampleConfig_Validate() {
	err := engine.Config{MaxMessageSize: 1 << 20, ConnQueueBytes: 1 << 10}.Validate()
	fmt.Println(err)
	// Output: shardhub: invalid config: ConnQueueBytes: 1024 is below MaxMessageSize (1048576): one message could never fit
}
