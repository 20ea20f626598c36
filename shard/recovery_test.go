package shard

import (
	"fmt"
	"strings"
	"testing"
)

// pub is a publication frame whose text is its offset.
func pub(off string) *pendingPub { return &pendingPub{off: off} }

type pendingPub struct{ off string }

func (p *pendingPub) post(s *Shard, ch string) { s.Publish(ch, p.off, textFrame(p.off)) }

func TestRecoveryKeepsLivePublicationsUntilTheEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		live      []string // offsets published while recovering
		recovered []string // what the engine sends from history
		last      string
		ok        bool
		after     []string // published after EndRecovery
		want      []string
	}{
		{
			name: "seam without overlap", live: []string{"5-0", "6-0"}, recovered: []string{"3-0", "4-0"}, last: "4-0", ok: true,
			after: []string{"7-0"}, want: []string{"3-0", "4-0", "5-0", "6-0", "7-0"},
		},
		{
			name: "live overlapping history", live: []string{"4-0", "5-0"}, recovered: []string{"3-0", "4-0", "5-0"}, last: "5-0", ok: true,
			after: []string{"6-0"}, want: []string{"3-0", "4-0", "5-0", "6-0"},
		},
		{
			name: "duplicates still in flight after the end", recovered: []string{"3-0", "4-0", "5-0"}, last: "5-0", ok: true,
			after: []string{"4-0", "5-0", "6-0", "7-0"}, want: []string{"3-0", "4-0", "5-0", "6-0", "7-0"},
		},
		{
			name: "same millisecond, by sequence", live: []string{"9-1", "9-2"}, recovered: []string{"9-0", "9-1"}, last: "9-1", ok: true,
			want: []string{"9-0", "9-1", "9-2"},
		},
		{
			name: "history unavailable: everything kept is written", live: []string{"5-0", "6-0"}, ok: false,
			after: []string{"7-0"}, want: []string{"5-0", "6-0", "7-0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startShard(t, Config{})
			r := &recorder{}
			c := NewConn("c", r)
			other := &recorder{}
			o := NewConn("o", other)
			for _, conn := range []*Conn{c, o} {
				if err := s.Register(conn); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Subscribe(o, "ch"); err != nil {
				t.Fatal(err)
			}
			if err := s.SubscribeRecovering(c, "ch"); err != nil {
				t.Fatal(err)
			}
			for _, off := range tt.live {
				pub(off).post(s, "ch")
			}
			for _, off := range tt.recovered {
				if err := c.Send(textFrame(off)); err != nil {
					t.Fatal(err)
				}
			}
			s.EndRecovery(c, "ch", tt.last, tt.ok)
			for _, off := range tt.after {
				pub(off).post(s, "ch")
			}
			waitFor(t, "every publication", func() bool { return len(r.texts(t)) >= len(tt.want) })
			if err := s.Barrier(); err != nil {
				t.Fatal(err)
			}
			if got := r.texts(t); strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			// The other subscriber is not affected by c's recovery.
			if got := len(other.texts(t)); got != len(tt.live)+len(tt.after) {
				t.Fatalf("the other subscriber got %d publications, want %d", got, len(tt.live)+len(tt.after))
			}
		})
	}
}

func TestRecoveryOverflowClosesWith1013(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{MaxRecoveryBuffer: 10})
	r := &recorder{}
	c := NewConn("c", r)
	if err := s.Register(c); err != nil {
		t.Fatal(err)
	}
	if err := s.SubscribeRecovering(c, "ch"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		s.Publish("ch", fmt.Sprintf("%d-0", i+1), textFrame("x"))
	}
	waitFor(t, "the close frame", func() bool { return len(r.frames(t)) == 1 })
	if f := r.frames(t)[0]; f.op != 0x8 || len(f.payload) < 2 || int(f.payload[0])<<8|int(f.payload[1]) != CloseSlowConsumer {
		t.Fatalf("got %+v, want close 1013", f)
	}
	s.Unregister(c)
	balanced(t, s)
}

func TestUnsubscribeDuringRecoveryReleasesKept(t *testing.T) {
	t.Parallel()
	s := startShard(t, Config{})
	c := NewConn("c", &recorder{})
	if err := s.Register(c); err != nil {
		t.Fatal(err)
	}
	if err := s.SubscribeRecovering(c, "ch"); err != nil {
		t.Fatal(err)
	}
	f := textFrame("kept")
	f.Retain(1)
	s.Publish("ch", "1-0", f)
	if !s.Unsubscribe(c, "ch") {
		t.Fatal("not subscribed")
	}
	if got := f.Refs(); got != 1 {
		t.Fatalf("a kept publication holds %d references after unsubscribe", got)
	}
	balanced(t, s)
}
