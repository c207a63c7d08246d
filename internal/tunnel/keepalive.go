package tunnel

import (
	"errors"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// Liveness: each side writes a ping on the control stream every
// KeepaliveInterval, and closes the session once it has received nothing
// at all (no data, no ping: readTap stamps each read) for KeepaliveTimeout. Any byte from the peer
// proves it alive, so a busy tunnel needs no ping round trip, and a ping
// stuck behind bulk data on a slow link does not count against the peer.
// yamux's own keepalive is off: it fails the session when one ping waits
// longer than its write timeout, which bulk traffic alone can cause.

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
			if silent := s.reads.silentFor(now); silent >= timeout {
				s.endFor(ErrPeerSilent)
				return
			}
			s.sweepSoon()
			select {
			case s.pingNow <- struct{}{}:
			default: // the last ping is still being written
			}
		}
	}
}

// pinger writes the pings that keepalive asks for. A ping is written by
// its own goroutine because the write may wait behind bulk data, and the
// silence check must go on meanwhile.
func (s *Session) pinger() {
	for {
		select {
		case <-s.done:
			return
		case <-s.pingNow:
			s.writeControl(wire.Control{Type: wire.ControlPing})
		}
	}
}

// ErrPeerSilent is the cause of a session whose peer sent nothing for
// the keepalive timeout.
var ErrPeerSilent = errors.New("the peer sent nothing for the keepalive timeout")

// PeerSilent reports whether the session ended because the peer went
// silent for longer than the keepalive timeout.
func (s *Session) PeerSilent() bool { return errors.Is(s.Cause(), ErrPeerSilent) }
