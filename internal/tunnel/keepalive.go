package tunnel

import (
	"errors"
	"time"
)

// Liveness: each side sends a multiplexer ping every KeepaliveInterval,
// and closes the session once it has received nothing at all (no data, no
// ping, no answer: the multiplexer stamps each read) for
// KeepaliveTimeout. Any byte from the peer proves it alive, so a busy
// tunnel needs no ping round trip, and an answer stuck behind bulk data on
// a slow link does not count against the peer. The pings also measure the
// round-trip time that the multiplexer tunes its windows with.

// keepalive closes the session once the peer has been silent for timeout,
// and pings every interval. It runs until the session ends.
func (s *Session) keepalive(interval, timeout time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.mux.Done():
			return
		case now := <-t.C:
			if now.Sub(s.mux.LastRead()) >= timeout {
				s.mux.Abort(ErrPeerSilent)
				return
			}
			// A late or lost answer is the silence check's business.
			s.mux.Ping()
		}
	}
}

// ErrPeerSilent is the cause of a session whose peer sent nothing for
// the keepalive timeout.
var ErrPeerSilent = errors.New("the peer sent nothing for the keepalive timeout")

// PeerSilent reports whether the session ended because the peer went
// silent for longer than the keepalive timeout.
func (s *Session) PeerSilent() bool { return errors.Is(s.Cause(), ErrPeerSilent) }
