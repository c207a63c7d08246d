package tunnel

import (
	"testing"
	"time"
)

// TestPeerSilentRule: a tick on time judges the silence against the
// timeout; a late tick (this process was not running, and the peer's
// bytes may wait unread) judges nothing until twice the timeout.
func TestPeerSilentRule(t *testing.T) {
	const interval, timeout = 200 * time.Millisecond, time.Second
	t0 := time.Unix(1_000_000, 0)
	for _, tt := range []struct {
		name          string
		sinceTick     time.Duration // now - prev
		sinceLastRead time.Duration
		want          bool
	}{
		{"on time, heard lately", interval, 500 * time.Millisecond, false},
		{"on time, silent for the timeout", interval, timeout, true},
		{"late tick, silent for the timeout", 1500 * time.Millisecond, 1200 * time.Millisecond, false},
		{"late tick, silent for twice the timeout", 3 * time.Second, 2 * timeout, true},
		{"a little late, silent for the timeout", 2 * interval, timeout, true},
	} {
		now := t0.Add(10 * time.Second)
		got := peerSilent(now, now.Add(-tt.sinceTick), now.Add(-tt.sinceLastRead), interval, timeout)
		if got != tt.want {
			t.Errorf("%s: silent = %v, want %v", tt.name, got, tt.want)
		}
	}
}
