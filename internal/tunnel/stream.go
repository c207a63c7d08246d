package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/sallyport/sallyport/internal/wire"
)

// Stream is one client connection carried through a tunnel. It is a
// net.Conn with CloseWrite, so pipe.Join can carry a half-close. As for a
// net.Conn, Read and Write may be called concurrently with each other.
type Stream struct {
	ms   *yamux.Stream
	sess *Session

	// needReply is set on the edge side: the first Read consumes the
	// connector's reply. replyOnce guards replyErr.
	needReply bool
	replyOnce sync.Once
	replyErr  error
	answer    wire.StreamReply

	replied   atomic.Bool // the reply has been read (replyErr is set)
	readEOF   atomic.Bool // the peer has finished sending
	reset     atomic.Bool // the peer aborted the stream
	closeOnce sync.Once

	// notifyMu guards onReadable, the function NotifyRead left.
	notifyMu   sync.Mutex
	onReadable func()
}

// ReadHeader reads the StreamOpen header the edge wrote first, waiting
// at most timeout for it.
func (s *Stream) ReadHeader(timeout time.Duration) (wire.StreamOpen, error) {
	s.ms.SetReadDeadline(time.Now().Add(timeout))
	defer s.ms.SetReadDeadline(time.Time{})
	return wire.ReadStreamOpen(s.ms)
}

// Reply answers the edge's StreamOpen: wire.CodeOK accepts the stream
// (naming in r.Service the service it is served as), any other code
// refuses it (the caller then closes the stream).
func (s *Stream) Reply(r wire.StreamReply) error {
	b, err := wire.AppendStreamReply(make([]byte, 0, 3+len(r.Service)+len(r.Reason)), r)
	if err != nil {
		return err
	}
	s.ms.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer s.ms.SetWriteDeadline(time.Time{})
	if _, err := s.ms.Write(b); err != nil {
		return fmt.Errorf("send stream reply: %w", s.err(err))
	}
	return nil
}

// Accepted waits for the connector's answer to the stream's header, on the
// edge side, and returns nil if the connector accepted the stream or its
// *wire.Refusal. Read calls it first; a front that must answer its client
// before any byte flows (SOCKS) calls it itself. On the connector side it
// returns nil at once.
func (s *Stream) Accepted() error {
	if !s.needReply {
		return nil
	}
	s.replyOnce.Do(func() {
		r, err := wire.ReadStreamReply(s.ms)
		if err == nil {
			s.answer = r
			err = r.Err()
		} else {
			err = s.err(err)
		}
		s.replyErr = err
		s.replied.Store(true)
	})
	return s.replyErr
}

// Answer is the connector's reply to the header, once Accepted (or the
// first Read) has returned. An accepting reply's Service names the
// service the connector serves the stream as.
func (s *Stream) Answer() wire.StreamReply { return s.answer }

// Read reads the peer's bytes. On the edge side the first Read first
// consumes the connector's reply and returns it as a *wire.Refusal error
// if the stream was refused.
func (s *Stream) Read(b []byte) (int, error) {
	if err := s.Accepted(); err != nil {
		return 0, err
	}
	if s.reset.Load() {
		return 0, ErrReset
	}
	n, err := s.ms.Read(b)
	if err == io.EOF {
		if s.sess.mux.IsClosed() && !s.sess.shutDownByPeer() {
			// The multiplexer ends every stream of a dead session with
			// EOF: a cut-off stream must not pass for a finished one. A
			// session the peer shut down on purpose has no cut-off streams.
			return n, fmt.Errorf("%w: %v", ErrClosed, yamux.ErrSessionShutdown)
		}
		s.readEOF.Store(true)
		return n, err
	}
	return n, s.err(err)
}

// Write sends bytes to the peer.
func (s *Stream) Write(b []byte) (int, error) {
	if s.reset.Load() {
		return 0, ErrReset
	}
	n, err := s.ms.Write(b)
	return n, s.err(err)
}

// CloseWrite tells the peer no more bytes will come; reading goes on.
func (s *Stream) CloseWrite() error { return s.err(s.ms.Close()) }

// Close ends the stream in both directions. If the peer may still be
// sending, it is told to stop (reset).
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.sess.untrack(s.ms.StreamID())
		if s.readEOF.Load() || s.reset.Load() {
			s.ms.Close()
			return
		}
		s.sess.sendReset(s.ms.StreamID())
		s.sess.finishReset(s.ms)
	})
	return nil
}

// resetByPeer marks the stream aborted by the peer and wakes its readers
// and writers, which then fail with ErrReset.
func (s *Stream) resetByPeer() {
	s.reset.Store(true)
	s.ms.SetDeadline(time.Unix(1, 0))
	s.readable()
}

// err maps the multiplexer's errors to this package's.
func (s *Stream) err(err error) error {
	switch {
	case err == nil:
		return nil
	case s.reset.Load():
		return ErrReset
	case errors.Is(err, yamux.ErrConnectionReset):
		return ErrReset
	case errors.Is(err, yamux.ErrSessionShutdown) || s.sess.mux.IsClosed():
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return err
}

// LocalAddr returns the tunnel connection's local address.
func (s *Stream) LocalAddr() net.Addr { return s.sess.conn.LocalAddr() }

// RemoteAddr returns the tunnel connection's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.sess.conn.RemoteAddr() }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.ms.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.ms.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.ms.SetWriteDeadline(t) }
