package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimitsEachMessage(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(New(slog.NewTextHandler(&buf, nil)))
	for range 1000 {
		log.Info("flood", "x", 1)
		log.With("k", "v").Info("other")
	}
	out := buf.String()
	if n := strings.Count(out, "msg=flood"); n != Burst {
		t.Fatalf("%d lines of one message in a burst, want %d", n, Burst)
	}
	if n := strings.Count(out, "msg=other"); n != Burst {
		t.Fatalf("another message is limited on its own: %d lines, want %d", n, Burst)
	}
}

func TestSuppressedCount(t *testing.T) {
	t.Parallel()
	l := &limiter{kinds: map[string]*kind{}}
	var now = time0()
	for range Burst + 7 {
		l.allow("m", now)
	}
	s, ok := l.allow("m", now.Add(1e9)) // a second later: five more tokens
	if !ok || s != 7 {
		t.Fatalf("allow = %v, suppressed %d; want true, 7", ok, s)
	}
}

func time0() time.Time { return time.Unix(1000, 0) }
