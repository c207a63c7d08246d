package tunnel

import (
	"errors"
	"fmt"
	"net"
)

// What a peer may make the multiplexer do, and how the tunnel bounds it.
//
// go-yamux bounds most of it itself: it answers a ping from its send loop
// through a queue of Config.PingBacklog answers and drops the rest; it
// refuses a stream the peer opens beyond MaxIncomingStreams with a reset
// and keeps nothing of it; it forgets a stream this side has closed at
// once, discarding what the peer still sends on it; a window update only
// adds to a counter; and each write to the connection has a deadline
// (ConnectionWriteTimeout, the keepalive timeout here): a peer that takes
// nothing for that long has stopped reading, and the session ends
// (ErrPeerNotReading).
//
// The tunnel adds rules that no sallyport peer comes near, so that a peer
// that floods is cut off and the edge can say why instead of serving the
// flood for as long as it lasts: a peer with more than maxPeerPings pings
// not yet answered (a sallyport peer has at most two in flight: its
// keepalive's and the multiplexer's round-trip probe), a connector that
// opens a stream (only the edge opens streams), and a data frame longer
// than any window (go-yamux would skip one for a stream it does not know,
// byte by byte), break the protocol (ErrProtocol). The tap finds them in
// the frames before the multiplexer reads them.

// ErrProtocol is wrapped by the cause of a session (Session.Cause) that
// ended because the peer broke the protocol.
var ErrProtocol = errors.New("tunnel protocol violation")

// ErrPeerNotReading is the cause of a session whose peer stopped reading:
// a write to it made no progress for the keepalive timeout.
var ErrPeerNotReading = errors.New("the peer stopped reading: a write to it made no progress for the keepalive timeout")

// maxPeerPings bounds the multiplexer pings the peer has sent that have
// not been answered yet.
const maxPeerPings = 16

// check returns the protocol violation in the frames the peer has sent
// so far, if any.
func (t *tap) check() error {
	if pings, answered := t.frames.pings, t.answered.Load(); pings > answered+maxPeerPings {
		return fmt.Errorf("%w: the peer has sent %d multiplexer pings that are not answered yet, more than the %d allowed (a sallyport peer has at most 2 in flight)", ErrProtocol, pings-answered, maxPeerPings)
	}
	if t.refuseOpens && t.frames.opens > 0 {
		return fmt.Errorf("%w: the peer opened %d streams (a connector opens none)", ErrProtocol, t.frames.opens)
	}
	if t.frames.longest > MaxWindow {
		return fmt.Errorf("%w: the peer sent a data frame of %d bytes, longer than any stream's window (%d)", ErrProtocol, t.frames.longest, MaxWindow)
	}
	return nil
}

// abort closes c at once, without a goodbye: a TLS connection is closed
// beneath TLS, whose Close first writes a close_notify alert and, to a
// peer that does not read, waits up to 5s for room to write it.
func abort(c net.Conn) error {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	return c.Close()
}
