package tunnel

import (
	"errors"
	"time"
)

// Liveness: each side sends a multiplexer ping every KeepaliveInterval,
// and closes the session once it has received nothing at all (no data, no
// ping, no answer: the tap stamps each read) for KeepaliveTimeout. Any
// byte from the peer proves it alive, so a busy tunnel needs no ping
// round trip, and an answer stuck behind bulk data on a slow link does not
// count against the peer. go-yamux's own keepalive is off: it fails the
// session when one answer takes longer than its write timeout, which bulk
// traffic alone can cause.

// keepalive closes the session once the peer has been silent for timeout,
// and asks the pinger for a ping every interval. It runs until the
// session ends.
func (s *Session) keepalive(interval, timeout time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			if silent := s.tap.silentFor(now); silent >= timeout {
				s.endFor(ErrPeerSilent)
				return
			}
			select {
			case s.pingNow <- struct{}{}:
			default: // the last ping still waits for its answer
			}
		}
	}
}

// pinger sends the pings that keepalive asks for. A ping is sent by its
// own goroutine because go-yamux's Ping waits for the answer, and the
// silence check must go on meanwhile.
func (s *Session) pinger() {
	for {
		select {
		case <-s.done:
			return
		case <-s.pingNow:
			s.mux.Ping() // a late or lost answer is the silence check's business
		}
	}
}

// ErrPeerSilent is the cause of a session whose peer sent nothing for
// the keepalive timeout.
var ErrPeerSilent = errors.New("the peer sent nothing for the keepalive timeout")

// PeerSilent reports whether the session ended because the peer went
// silent for longer than the keepalive timeout.
func (s *Session) PeerSilent() bool { return errors.Is(s.Cause(), ErrPeerSilent) }
