package tunnel

import (
	"errors"
	"fmt"
	"net"
)

// The multiplexer's own floods.
//
// yamux v0.1.2 answers some frames by itself, and a peer can make it hold
// goroutines and memory with them. It answers each ping request from a
// goroutine of its own, which waits up to ConnectionWriteTimeout (a
// minute) for room in the send queue: a peer that sends pings and reads
// none of the answers makes it hold a goroutine per ping (300,000 pings
// took an edge to 350 MiB). It keeps every stream the peer opens until
// the peer closes it, closed by this side or not: an edge that turns a
// connector's streams away still holds each one (about 700 bytes) for as
// long as the connector likes. And a write to a peer that has stopped
// reading waits a minute in yamux, with everything that gathers behind it.
//
// So the tunnel bounds them itself. The readTap counts the pings and the
// stream openings in the frames before yamux reads them, and ends the
// session as a protocol violation (ErrProtocol) once the peer has more
// than maxPeerPings pings unanswered (a sallyport peer sends none: its
// liveness is keepalive.go's) or opens more streams than it may (a
// connector opens its control stream only). The batch writer gives each
// write to the connection a deadline of the keepalive timeout, renewed
// as the write goes on: a peer that takes nothing for that long has
// stopped reading, and the session ends (ErrPeerNotReading).

// ErrProtocol is wrapped by the cause of a session (Session.Cause) that
// ended because the peer broke the protocol.
var ErrProtocol = errors.New("tunnel protocol violation")

// ErrPeerNotReading is the cause of a session whose peer stopped reading:
// a write to it made no progress for the keepalive timeout.
var ErrPeerNotReading = errors.New("the peer stopped reading: a write to it made no progress for the keepalive timeout")

// maxPeerPings bounds the multiplexer pings the peer has sent that have
// not been answered yet.
const maxPeerPings = 16

// writeChunk is the most the batch writer hands the connection in one
// write, under one deadline: a peer that takes in less than writeChunk
// bytes in a keepalive timeout (4 KiB/s at the default 15s) is taken for
// one that has stopped reading.
const writeChunk = 64 << 10

// check returns the protocol violation in the frames the peer has sent
// so far, if any.
func (r *readTap) check() error {
	if pings, answered := r.frames.pings, r.answered.Load(); pings > answered+maxPeerPings {
		return fmt.Errorf("%w: the peer has sent %d multiplexer pings that are not answered yet, more than the %d allowed (a sallyport peer sends none)", ErrProtocol, pings-answered, maxPeerPings)
	}
	if r.maxOpens > 0 && r.frames.opens > r.maxOpens {
		return fmt.Errorf("%w: the peer opened %d streams, more than the %d it may (a connector opens only its control stream)", ErrProtocol, r.frames.opens, r.maxOpens)
	}
	return nil
}

// peerFault returns what the connection's reader or writer found wrong
// with the peer, if anything.
func (s *Session) peerFault() error {
	if err := s.reads.violation(); err != nil {
		return err
	}
	if err := s.bw.failure(); errors.Is(err, ErrPeerNotReading) {
		return err
	}
	return nil
}

// abort closes c at once, without a goodbye: a TLS connection is closed
// beneath TLS, whose Close first writes a close_notify alert and, to a
// peer that does not read, waits up to 5s for room to write it.
func abort(c net.Conn) {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	c.Close()
}
