package tunnel

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/mux"
	"github.com/sallyport/sallyport/internal/wire"
)

// Stream is one client connection carried through a tunnel. It is a
// net.Conn with CloseWrite, so pipe.Join can carry a half-close. As for a
// net.Conn, Read and Write may be called concurrently with each other.
// Its errors are the multiplexer's: ErrReset after the peer's reset, an
// error wrapping ErrClosed once the session has ended (unless the peer
// had finished the stream: then io.EOF), os.ErrDeadlineExceeded at a
// deadline.
type Stream struct {
	ms   *mux.Stream
	sess *Session

	// needReply is set on the edge side: the first Read consumes the
	// connector's reply. replyOnce guards replyErr and answer.
	needReply bool
	replyOnce sync.Once
	replyErr  error
	answer    wire.StreamReply

	// final is set on the connector side for a lookup: its reply is all
	// the connector sends on it.
	final bool
}

// ReadHeader reads the StreamOpen header the edge wrote first, waiting
// at most timeout for it.
func (s *Stream) ReadHeader(timeout time.Duration) (wire.StreamOpen, error) {
	s.ms.SetReadDeadline(time.Now().Add(timeout))
	defer s.ms.SetReadDeadline(time.Time{})
	h, err := wire.ReadStreamOpen(s.ms)
	s.final = h.Lookup() || h.Membership()
	return h, err
}

// Reply answers the edge's StreamOpen: wire.CodeOK accepts the stream
// (naming in r.Service the service it is served as), any other code
// refuses it (the caller then closes the stream). A refusal, and the
// answer to a lookup, are all the connector sends on the stream: Reply
// ends the stream's sending with it, so that the close that follows (a
// reset, as the edge may still be sending) cannot discard it before the
// edge has read it.
func (s *Stream) Reply(r wire.StreamReply) error {
	b, err := wire.AppendStreamReply(make([]byte, 0, 3+len(r.Service)+len(r.Reason)), r)
	if err != nil {
		return err
	}
	s.ms.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer s.ms.SetWriteDeadline(time.Time{})
	if _, err := s.ms.Write(b); err != nil {
		return fmt.Errorf("send stream reply: %w", err)
	}
	if r.Code != wire.CodeOK || s.final {
		return s.CloseWrite()
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
		}
		s.replyErr = err
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
	return s.ms.Read(b)
}

// Write sends bytes to the peer.
func (s *Stream) Write(b []byte) (int, error) { return s.ms.Write(b) }

// CloseWrite tells the peer no more bytes will come; reading goes on.
func (s *Stream) CloseWrite() error { return s.ms.CloseWrite() }

// Close ends the stream in both directions. If the peer may still be
// sending, it is told to stop: a reset (the multiplexer's RST, as TCP's),
// after which the peer's reads and writes fail with ErrReset, and never
// with a clean end of stream. What it still sends is dropped.
func (s *Stream) Close() error { return s.ms.Close() }

// LocalAddr returns the tunnel connection's local address.
func (s *Stream) LocalAddr() net.Addr { return s.sess.conn.LocalAddr() }

// RemoteAddr returns the tunnel connection's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.sess.conn.RemoteAddr() }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.ms.SetDeadline(t) }

// SetReadDeadline sets the read deadline; it moves the deadline of a Read
// that waits.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.ms.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.ms.SetWriteDeadline(t) }
