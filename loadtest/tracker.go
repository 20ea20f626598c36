package loadtest

// windowBits is how far behind the newest sequence number a late message can
// still be told apart from a duplicate.
const windowBits = 256

// stream follows one (publisher, channel) sequence on one connection. Its
// sliding bitmap remembers which of the last windowBits sequence numbers
// arrived. 48 bytes; owned by the connection's reader goroutine.
type stream struct {
	pub, ch uint32
	max     uint64                  // highest sequence number seen; 0 before the first
	win     [windowBits / 64]uint64 // bit i set: sequence max−i arrived
}

// arrival classifies one message of a stream.
type arrival uint8

const (
	arrivedInOrder   arrival = iota // newer than everything before (gaps may be losses)
	arrivedLate                     // older than a message already seen, first copy
	arrivedDuplicate                // this sequence number was seen already
	arrivedTooLate                  // older than the window: counted late, may be a duplicate
)

// observe records seq and says how it arrived.
func (s *stream) observe(seq uint64) arrival {
	if seq > s.max {
		s.shift(seq - s.max)
		s.max = seq
		s.win[0] |= 1
		return arrivedInOrder
	}
	d := s.max - seq
	if d >= windowBits {
		return arrivedTooLate
	}
	w, bit := d/64, uint64(1)<<(d%64)
	if s.win[w]&bit != 0 {
		return arrivedDuplicate
	}
	s.win[w] |= bit
	return arrivedLate
}

// shift moves the window n positions towards newer sequence numbers.
func (s *stream) shift(n uint64) {
	if n >= windowBits {
		s.win = [windowBits / 64]uint64{}
		return
	}
	words, b := int(n/64), n%64
	for i := len(s.win) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = s.win[j] << b
			if b != 0 && j-1 >= 0 {
				v |= s.win[j-1] >> (64 - b)
			}
		}
		s.win[i] = v
	}
}
