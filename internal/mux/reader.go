package mux

import (
	"errors"
	"fmt"
	"io"
)

// The session's reader: one goroutine that owns the reading of the
// connection. It reads each frame's header into a 12-byte array and a
// data frame's body straight into its stream's receive buffer (it holds
// no read buffer of its own: the connection beneath buffers), and handles
// the frame before it reads the next; it never waits for the writer
// (control frames it answers with are queued, see writer.go).

// read is the reading goroutine: it handles frames until the session
// ends or the peer breaks the protocol.
func (s *Session) read() {
	s.fail(s.readFrames())
}

func (s *Session) readFrames() error {
	var hb [headerSize]byte
	for {
		if _, err := io.ReadFull(s.rd, hb[:]); err != nil {
			if s.ended() {
				return s.err
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("the peer closed the connection: %w", err)
			}
			return fmt.Errorf("read from the connection: %w", err)
		}
		h, err := parseHeader(hb[:])
		if err != nil {
			return err
		}
		if err := s.handle(h); err != nil {
			return err
		}
		s.handled.Add(1)
		if !s.spoken {
			s.spoken = true
			close(s.spoke)
		}
		if s.overflow.Load() {
			return fmt.Errorf("%w: the peer does not read the frames it asks for (more than %d bytes queued)", ErrProtocol, controlLimit)
		}
		s.maybeSweep()
	}
}

// handle handles one frame whose header has been read.
func (s *Session) handle(h header) error {
	switch h.typ {
	case typePing:
		if h.flags&flagSYN != 0 {
			s.pings++
			if unanswered := s.pings - s.answered.Load(); unanswered > maxPeerPings {
				return fmt.Errorf("%w: the peer has sent %d pings that are not answered yet, more than the %d allowed", ErrProtocol, unanswered, maxPeerPings)
			}
			s.appendControl(typePing, flagACK, 0, h.length)
		} else if h.flags&flagACK != 0 {
			s.pong(h.length)
		}
		return nil
	case typeGoAway:
		return fmt.Errorf("%w (code %d)", ErrGoneAway, h.length)
	}
	if h.typ == typeData && h.length > MaxWindow {
		return fmt.Errorf("%w: the peer sent a data frame of %d bytes, longer than any stream's window (%d)", ErrProtocol, h.length, MaxWindow)
	}
	st, err := s.streamOf(h)
	if err != nil {
		return err
	}
	if st == nil {
		return s.skip(h)
	}
	if h.flags&(flagACK|flagRST) != 0 && st.unacked.CompareAndSwap(true, false) {
		s.acked()
	}
	return st.frame(h)
}

// streamOf returns the stream a data frame or window update is for,
// opening it if the frame says so (SYN), or nil if there is none: a
// stream closed here, reset by the peer, refused, or one that never was.
func (s *Session) streamOf(h header) (*Stream, error) {
	if h.flags&flagSYN == 0 {
		s.mu.Lock()
		st := s.streams[h.stream]
		s.mu.Unlock()
		return st, nil
	}
	if s.cfg.Opens {
		return nil, fmt.Errorf("%w: the peer opened a stream (id %d); only this side opens streams", ErrProtocol, h.stream)
	}
	s.mu.Lock()
	if s.ended() {
		s.mu.Unlock()
		return nil, s.err
	}
	if h.stream <= s.lastID {
		last := s.lastID
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: the peer opened stream %d, not above the last one it opened (%d)", ErrProtocol, h.stream, last)
	}
	s.lastID = h.stream
	if len(s.accepts) >= s.backlog {
		s.mu.Unlock()
		// Refused; nothing of it is kept.
		s.appendControl(typeWindowUpdate, flagRST, h.stream, 0)
		return nil, nil
	}
	st := newStream(s, h.stream)
	s.streams[h.stream] = st
	s.accepts = append(s.accepts, st)
	s.mu.Unlock()
	wake(s.acceptWake)
	return st, nil
}

// skip discards a frame's body.
func (s *Session) skip(h header) error {
	if h.typ != typeData || h.length == 0 {
		return nil
	}
	if err := s.discard(int(h.length)); err != nil {
		return fmt.Errorf("read from the connection: %w", err)
	}
	return nil
}

// discard reads and drops n bytes of the connection, through a buffer
// borrowed from io.Discard's pool.
func (s *Session) discard(n int) error {
	_, err := io.CopyN(io.Discard, s.rd, int64(n))
	return err
}
