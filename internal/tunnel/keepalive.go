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
	prev := time.Now()
	for {
		select {
		case <-s.mux.Done():
			return
		case <-t.C:
			now := time.Now()
			if peerSilent(now, prev, s.mux.LastRead(), interval, timeout) {
				s.mux.Abort(ErrPeerSilent)
				return
			}
			prev = now
			// A late or lost answer is the silence check's business.
			s.mux.Ping()
		}
	}
}

// peerSilent decides, at a tick at now (the one before came at prev),
// whether a peer last heard from at lastRead is silent. A tick that comes
// more than an interval late means this process was not running (a
// starved machine, a paused VM, a long stop of the world): bytes from
// the peer may be waiting unread in the socket, and only the reader, once
// it runs, can tell. So such a tick judges nothing, unless the silence
// has lasted twice the timeout: a process that never runs on time must
// still drop a dead peer.
func peerSilent(now, prev, lastRead time.Time, interval, timeout time.Duration) bool {
	silence := now.Sub(lastRead)
	late := now.Sub(prev) > 2*interval
	return silence >= 2*timeout || (silence >= timeout && !late)
}

// ErrPeerSilent is the cause of a session whose peer sent nothing for
// the keepalive timeout.
var ErrPeerSilent = errors.New("the peer sent nothing for the keepalive timeout")

// PeerSilent reports whether the session ended because the peer went
// silent for longer than the keepalive timeout.
func (s *Session) PeerSilent() bool { return errors.Is(s.Cause(), ErrPeerSilent) }
