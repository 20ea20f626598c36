package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// publisher publishes the run's messages to one target at Config.Rate per
// second, through the HTTP API or a publisher WebSocket. It stamps each payload
// with its marker just before sending. Sequence numbers count per channel, so
// ordering can be checked per channel.
type publisher struct {
	cfg    Config
	target int
	client *http.Client
	api    string  // API base URL
	ws     *wsConn // publisher connection (PublishWS)

	sent     atomic.Int64 // publish attempts, read by the progress line
	failed   atomic.Int64 // publishes that failed, read by the progress line
	accepted []int64      // per channel: accepted by the server; owned by run, read after it returns
	behind   int64        // messages the schedule wanted but time ran out for; owned by run
	errs     map[string]int64
	rtt      lockedHist // request round trips (HTTP) or write times (WS), µs
}

func newPublisher(cfg Config, target int, client *http.Client) *publisher {
	p := &publisher{cfg: cfg, target: target, client: client, errs: map[string]int64{}}
	p.api = cfg.APIs[0]
	if len(cfg.APIs) == len(cfg.URLs) {
		p.api = cfg.APIs[target]
	}
	p.rtt.h = NewHistogram()
	n := 1
	if cfg.Scenario == Channels {
		n = cfg.Channels
	}
	p.accepted = make([]int64, n)
	return p
}

// connect opens the publisher WebSocket (PublishWS only) and keeps reading it,
// so a server echoing to the publisher never blocks on it.
func (p *publisher) connect(ctx context.Context) error {
	if p.cfg.Publish != PublishWS {
		return nil
	}
	u, err := url.Parse(p.cfg.URLs[p.target])
	if err != nil {
		return err
	}
	h := http.Header{}
	if p.cfg.Token != "" {
		h.Set("Authorization", "Bearer "+p.cfg.Token)
	}
	ws, err := dialWS(ctx, &net.Dialer{}, u, h, p.cfg.ReadBufferSize, p.cfg.ConnectTimeout)
	if err != nil {
		return fmt.Errorf("publisher connection to %s: %w", u, err)
	}
	p.ws = ws
	go func() { // discards what the server sends the publisher; ends when closed
		for {
			if _, _, err := ws.next(); err != nil {
				return
			}
		}
	}()
	return nil
}

func (p *publisher) close() {
	if p.ws != nil {
		p.ws.close()
	}
}

// run publishes rate × d messages on a fixed schedule (message n is due n/rate
// seconds after the start), then returns. When sends are slower than the
// schedule the publisher sends back to back to catch up, for at most a grace of
// max(1s, d/10) past d; what it still could not send is counted in behind.
func (p *publisher) run(ctx context.Context, d time.Duration) {
	rate := p.cfg.Rate
	start := time.Now()
	end := start.Add(d + max(time.Second, d/10))
	total := int64(rate * d.Seconds())
	seqs := make([]uint64, len(p.accepted))
	var buf, msg []byte
	timer := time.NewTimer(0)
	defer timer.Stop()
	for n := int64(0); n < total; n++ {
		due := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if time.Now().After(end) {
			p.behind = total - n
			return
		}
		ch := 0
		if len(seqs) > 1 {
			ch = int(n % int64(len(seqs)))
		}
		seqs[ch]++
		m := marker{pub: uint32(p.target), ch: uint32(ch), seq: seqs[ch], ts: time.Now().UnixNano()}
		buf = appendPayload(buf[:0], m, p.cfg.Size)
		p.sent.Add(1)
		t0 := time.Now()
		var err error
		if p.ws != nil {
			msg = p.render(msg[:0], buf, ch)
			if err = p.ws.write(opText, msg); err != nil {
				err = publishError("publish_ws_" + errorKind(err))
			}
		} else {
			err = p.post(ctx, buf, ch)
		}
		p.rtt.record(time.Since(t0).Microseconds())
		if err != nil {
			p.failed.Add(1)
			p.errs[err.Error()]++
			continue
		}
		p.accepted[ch]++
	}
}

// render fills the publish template.
func (p *publisher) render(dst, payload []byte, ch int) []byte {
	t := p.cfg.PublishTemplate
	for {
		i := strings.Index(t, "{{")
		if i < 0 {
			return append(dst, t...)
		}
		dst = append(dst, t[:i]...)
		t = t[i:]
		switch {
		case strings.HasPrefix(t, "{{payload}}"):
			dst = append(dst, payload...)
			t = t[len("{{payload}}"):]
		case strings.HasPrefix(t, "{{channel}}"):
			dst = append(dst, p.cfg.ChannelPrefix...)
			dst = strconv.AppendInt(dst, int64(ch), 10)
			t = t[len("{{channel}}"):]
		default:
			dst = append(dst, "{{"...)
			t = t[2:]
		}
	}
}

// publishError is a failed publish, named by kind for the errors table.
type publishError string

func (e publishError) Error() string { return string(e) }

// post publishes one payload through the HTTP API. Only a 2xx answer counts
// as accepted: the bundled server answers 503 when it dropped the message.
func (p *publisher) post(ctx context.Context, body []byte, ch int) error {
	u := p.api + "/api/broadcast"
	if p.cfg.Scenario == Channels {
		u = p.api + "/api/publish?channel=" + url.QueryEscape(p.cfg.ChannelPrefix+strconv.Itoa(ch))
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.HTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return publishError("publish_bad_request")
	}
	req.Header.Set("Content-Type", "application/json")
	if p.cfg.APIToken != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.APIToken)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return publishError("publish_" + errorKind(err))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return publishError("publish_http_" + strconv.Itoa(resp.StatusCode))
	}
	return nil
}

// publishers is the set of a run's publishers.
type publishers []*publisher

func newPublishers(cfg Config, client *http.Client) publishers {
	var ps publishers
	n := len(cfg.URLs)
	if cfg.PublishTo == PublishFirst {
		n = 1
	}
	for t := range n {
		ps = append(ps, newPublisher(cfg, t, client))
	}
	return ps
}

// run runs every publisher for d, in parallel, and returns when all are done.
func (ps publishers) run(ctx context.Context, d time.Duration) {
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx, d)
		}()
	}
	wg.Wait()
}

// sent returns the publish attempts so far and how many of them failed.
func (ps publishers) sent() (attempts, failed int64) {
	for _, p := range ps {
		attempts += p.sent.Load()
		failed += p.failed.Load()
	}
	return attempts, failed
}

// expected is the number of deliveries the accepted publications owe the
// counted connections.
func (ps publishers) expected(subs map[[2]int]int64) int64 {
	var e int64
	for _, p := range ps {
		for ch, n := range p.accepted {
			e += n * subs[[2]int{p.target, ch}]
		}
	}
	return e
}
