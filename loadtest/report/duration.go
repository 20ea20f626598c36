package report

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that a report's JSON shows as people write it:
// "10s", "1m30s", "250ms". Producers use it in the settings they store with
// SetConfig. It decodes from that form and from a number of nanoseconds, which
// reports written before it carry.
type Duration time.Duration

// MarshalJSON writes d as a string such as "10s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a string such as "10s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("report: duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var ns int64
	if err := json.Unmarshal(b, &ns); err != nil {
		return fmt.Errorf("report: duration %s is neither a string like \"10s\" nor nanoseconds", b)
	}
	*d = Duration(ns)
	return nil
}
