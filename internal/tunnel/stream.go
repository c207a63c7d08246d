package tunnel

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
	"github.com/xtaci/smux"
)

// Stream is one client connection carried through a tunnel. It is a
// net.Conn with CloseWrite, so pipe.Join can carry a half-close. Read and
// Write may be called concurrently with each other, as for net.Conn.
type Stream struct {
	ms *smux.Stream

	// replyOnce guards the edge side's reading of the connector's reply,
	// done by the first Read.
	replyOnce sync.Once
	needReply bool
	replyErr  error
}

// ReadHeader reads the StreamOpen header the edge wrote first, waiting
// at most timeout for it.
func (s *Stream) ReadHeader(timeout time.Duration) (wire.StreamOpen, error) {
	s.ms.SetReadDeadline(time.Now().Add(timeout))
	defer s.ms.SetReadDeadline(time.Time{})
	return wire.ReadStreamOpen(s.ms)
}

// Reply answers the edge's StreamOpen: wire.CodeOK accepts the stream,
// any other code refuses it (the caller then closes the stream).
func (s *Stream) Reply(r wire.StreamReply) error {
	s.ms.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer s.ms.SetWriteDeadline(time.Time{})
	if _, err := s.ms.Write(wire.AppendStreamReply(make([]byte, 0, 8+len(r.Reason)), r)); err != nil {
		return fmt.Errorf("send stream reply: %w", err)
	}
	return nil
}

// Read reads the peer's bytes. On the edge side the first Read first
// consumes the connector's reply and returns it as a *wire.Refusal error
// if the stream was refused.
func (s *Stream) Read(b []byte) (int, error) {
	if s.needReply {
		s.replyOnce.Do(func() {
			r, err := wire.ReadStreamReply(s.ms)
			if err == nil {
				err = r.Err()
			}
			s.replyErr = err
		})
		if s.replyErr != nil {
			return 0, s.replyErr
		}
	}
	return s.ms.Read(b)
}

// Write sends bytes to the peer.
func (s *Stream) Write(b []byte) (int, error) { return s.ms.Write(b) }

// CloseWrite tells the peer no more bytes will come; reading goes on.
func (s *Stream) CloseWrite() error { return s.ms.CloseWrite() }

// Close ends the stream in both directions.
func (s *Stream) Close() error { return s.ms.Close() }

// LocalAddr returns the tunnel connection's local address.
func (s *Stream) LocalAddr() net.Addr { return s.ms.LocalAddr() }

// RemoteAddr returns the tunnel connection's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.ms.RemoteAddr() }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.ms.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.ms.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.ms.SetWriteDeadline(t) }
