package redisbroker

import "testing"

func TestTrackerVerdicts(t *testing.T) {
	t.Parallel()
	const rc = "ws:ch:x"
	env := func(kind byte, origin string, epoch, stream, seq uint64) *envelope {
		return &envelope{kind: kind, origin: origin, epoch: epoch, stream: stream, seq: seq}
	}
	type step struct {
		e    *envelope
		v    verdict
		lost uint64
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{name: "first message is the baseline, in order after", steps: []step{
			{env(kindPublication, "a", 1, 1, 7), deliver, 0},
			{env(kindPublication, "a", 1, 1, 8), deliver, 0},
		}},
		{name: "gap is counted, late copy is a duplicate", steps: []step{
			{env(kindPublication, "a", 1, 1, 1), deliver, 0},
			{env(kindPublication, "a", 1, 1, 5), deliver, 3},
			{env(kindPublication, "a", 1, 1, 4), duplicate, 0},
			{env(kindPublication, "a", 1, 1, 5), duplicate, 0},
		}},
		{name: "origins are independent", steps: []step{
			{env(kindBroadcast, "a", 1, 1, 1), deliver, 0},
			{env(kindBroadcast, "b", 1, 1, 9), deliver, 0},
			{env(kindBroadcast, "a", 1, 1, 3), deliver, 1},
		}},
		{name: "announcement reveals the tail", steps: []step{
			{env(kindPublication, "a", 1, 1, 1), deliver, 0},
			{env(kindAnnounce, "a", 1, 1, 4), deliver, 3},
			{env(kindAnnounce, "a", 1, 1, 4), duplicate, 0},
			{env(kindPublication, "a", 1, 1, 5), deliver, 0},
		}},
		{name: "void fills its place", steps: []step{
			{env(kindPublication, "a", 1, 1, 1), deliver, 0},
			{env(kindVoid, "a", 1, 1, 2), deliver, 0},
			{env(kindPublication, "a", 1, 1, 3), deliver, 0},
		}},
		{name: "a new stream of a known origin owes its start", steps: []step{
			{env(kindPublication, "a", 1, 1, 10), deliver, 0},
			{env(kindPublication, "a", 1, 2, 3), deliver, 2},
			{env(kindPublication, "a", 1, 1, 11), duplicate, 0}, // the old stream is over
		}},
		{name: "a restarted publisher (newer epoch) owes its start", steps: []step{
			{env(kindPublication, "a", 1, 5, 10), deliver, 0},
			{env(kindPublication, "a", 2, 1, 1), deliver, 0},
			{env(kindPublication, "a", 2, 1, 2), deliver, 0},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := newTracker()
			tr.want(rc)
			for i, s := range tc.steps {
				v, lost := tr.observe(rc, s.e, 100)
				if v != s.v || lost != s.lost {
					t.Fatalf("step %d (%c seq %d): verdict %d lost %d, want %d lost %d", i, s.e.kind, s.e.seq, v, lost, s.v, s.lost)
				}
			}
		})
	}
}

func TestTrackerForgets(t *testing.T) {
	t.Parallel()
	tr := newTracker()
	e := &envelope{kind: kindPublication, origin: "a", epoch: 1, stream: 1, seq: 1}
	if v, _ := tr.observe("ws:ch:x", e, 100); v != unwanted {
		t.Fatalf("a channel not wanted: verdict %d", v)
	}
	tr.want("ws:ch:x")
	tr.observe("ws:ch:x", e, 100)
	// Unsubscribed, then subscribed again: what was published in between
	// was not owed, so there is no baseline.
	tr.drop("ws:ch:x")
	tr.want("ws:ch:x")
	if _, lost := tr.observe("ws:ch:x", &envelope{kind: kindPublication, origin: "a", epoch: 1, stream: 1, seq: 50}, 100); lost != 0 {
		t.Fatalf("lost %d after a resubscription, want a new baseline", lost)
	}
	tr.expire(200)
	if n := tr.size(); n != 0 {
		t.Fatalf("%d positions kept after expiry", n)
	}
	if _, lost := tr.observe("ws:ch:x", &envelope{kind: kindPublication, origin: "a", epoch: 1, stream: 1, seq: 90}, 300); lost != 0 {
		t.Fatalf("lost %d after the origin expired, want a new baseline", lost)
	}
}

func TestSeqTableRotation(t *testing.T) {
	t.Parallel()
	var streams uint64
	next := func() uint64 { streams++; return streams }
	st := newSeqTable()
	a := st.get("a", next)
	st.rotate()
	if st.get("a", next) != a {
		t.Fatal("a channel used in the last period was forgotten")
	}
	st.rotate()
	st.rotate()
	if b := st.get("a", next); b == a || b.stream == a.stream {
		t.Fatal("an idle channel kept its sequence past two rotations")
	}
}
