package redisbroker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shardhub/shardhub/engine/redisbroker/redistest"
)

// The history script on its own: store, resend (found, never stored,
// trimmed) and the void on a failure that will not go away.
func TestPublishScript(t *testing.T) {
	t.Parallel()
	r := redistest.Start(t)
	ctx := context.Background()
	rc := r.Client()
	ps := rc.Subscribe(ctx, "ch")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	published := func() string {
		t.Helper()
		m, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return m.(interface{ String() string }).String()
	}
	const pfx = "n1|7:1|"
	run := func(key string, maxlen, seq int, resend bool) (any, error) {
		rs := 0
		if resend {
			rs = 1
		}
		return publishScript.Run(ctx, rc, []string{key}, "ch", maxlen, 60000, "2P<head>", "data", pfx, seq, rs).Result()
	}
	id1, err := run("s", 100, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := published(); !strings.Contains(got, "2P<head>"+itoa(int64(len(id1.(string))))+":"+id1.(string)+"data") {
		t.Fatalf("published %s, want the head, offset %s and data", got, id1)
	}
	// Sent again: found, published again with its offset, not stored twice.
	if v, err := run("s", 100, 1, true); err != nil || v != int64(0) {
		t.Fatalf("resend of a stored publication: %v %v, want 0", v, err)
	}
	if got := published(); !strings.Contains(got, id1.(string)) {
		t.Fatalf("resend published %s, want its original offset %s", got, id1)
	}
	// Sent again but never stored (a lower number of the stream is newest): stored now.
	if v, err := run("s", 100, 2, true); err != nil || v == int64(0) {
		t.Fatalf("resend of a publication never stored: %v %v, want a new id", v, err)
	}
	published()
	if n, _ := rc.XLen(ctx, "s").Result(); n != 2 {
		t.Fatalf("stream holds %d entries, want 2", n)
	}
	// Stored and trimmed since: published without offset, not stored again.
	for seq := 3; seq <= 5; seq++ {
		if _, err := run("s", 2, seq, false); err != nil {
			t.Fatal(err)
		}
		published()
	}
	if v, err := run("s", 2, 3, true); err != nil || v != int64(0) {
		t.Fatalf("resend of a trimmed publication: %v %v, want 0", v, err)
	}
	if got := published(); !strings.Contains(got, "2P<head>0:data") {
		t.Fatalf("trimmed resend published %s, want no offset", got)
	}
	if n, _ := rc.XLen(ctx, "s").Result(); n != 2 {
		t.Fatalf("stream holds %d entries, want 2 (MAXLEN)", n)
	}
	// A failure that will not go away: a void in its place, and the error.
	if err := rc.Set(ctx, "notastream", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := run("notastream", 100, 1, false); err == nil || !strings.HasPrefix(err.Error(), voidErrPrefix) {
		t.Fatalf("store into a string key: %v, want an error starting with %s", err, voidErrPrefix)
	}
	if got := published(); !strings.Contains(got, "2V<head>") || strings.Contains(got, "data") {
		t.Fatalf("failure published %s, want the void (the head, kind V, no data)", got)
	}
}
