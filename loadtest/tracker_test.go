package loadtest

import "testing"

func TestStreamObserve(t *testing.T) {
	t.Parallel()
	I, L, D, T := arrivedInOrder, arrivedLate, arrivedDuplicate, arrivedTooLate
	tests := []struct {
		name string
		seqs []uint64
		want []arrival
	}{
		{"in order", []uint64{1, 2, 3, 4}, []arrival{I, I, I, I}},
		{"gap is not disorder", []uint64{1, 2, 5, 6}, []arrival{I, I, I, I}},
		{"swapped pair", []uint64{2, 1, 4, 3}, []arrival{I, L, I, L}},
		{"duplicate", []uint64{1, 2, 2, 3, 1}, []arrival{I, I, D, I, D}},
		{"late then its duplicate", []uint64{3, 1, 1}, []arrival{I, L, D}},
		{"far behind the window", []uint64{1, 1000, 1}, []arrival{I, I, T}},
		{"edge of the window", []uint64{1, 1 + windowBits - 1, 1}, []arrival{I, I, D}},
		{"just beyond the window", []uint64{1, 1 + windowBits, 1}, []arrival{I, I, T}},
		{"shift across words", []uint64{10, 75, 140, 11, 74, 139, 10}, []arrival{I, I, I, L, L, L, D}},
		{"big jump clears", []uint64{5, 5000, 4999, 5}, []arrival{I, I, L, T}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var s stream
			for i, seq := range tt.seqs {
				if got := s.observe(seq); got != tt.want[i] {
					t.Fatalf("message %d (seq %d): got %d, want %d", i, seq, got, tt.want[i])
				}
			}
		})
	}
}
