package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	yamux "github.com/libp2p/go-yamux/v5"
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

	// final is set on the connector side for a lookup: its reply is all
	// the connector sends on it.
	final bool

	replied   atomic.Bool // the reply has been read (replyErr is set)
	readEOF   atomic.Bool // the peer has finished sending
	closeOnce sync.Once

	// dlMu guards the read deadline: rdl, the caller's; waiting, set
	// while a read waits in the multiplexer under a deadline; armed, set
	// while the multiplexer's stream has one (see read).
	dlMu    sync.Mutex
	rdl     time.Time
	waiting bool
	armed   bool

	// notifyMu guards onReadable, the function NotifyRead left.
	notifyMu   sync.Mutex
	onReadable func()
}

// ReadHeader reads the StreamOpen header the edge wrote first, waiting
// at most timeout for it.
func (s *Stream) ReadHeader(timeout time.Duration) (wire.StreamOpen, error) {
	s.SetReadDeadline(time.Now().Add(timeout))
	defer s.SetReadDeadline(time.Time{})
	h, err := wire.ReadStreamOpen((*muxReader)(s))
	s.final = h.Lookup()
	return h, s.err(err)
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
		return fmt.Errorf("send stream reply: %w", s.err(err))
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
		r, err := wire.ReadStreamReply((*muxReader)(s))
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
	n, err := s.read(b)
	if err == io.EOF {
		// go-yamux ends a stream with EOF only after the peer's FIN: a
		// stream of a session that ended fails instead.
		s.readEOF.Store(true)
		return n, err
	}
	return n, s.err(err)
}

// read reads from the multiplexer's stream under the read deadline.
//
// go-yamux v5.1.0 gives a reader's credit back (a window update) from
// inside Read, under the read deadline; once that has passed it drops the
// update but keeps the credit as given. A Read that takes bytes after its
// deadline (a read that must not wait, or a wait that ends just as bytes
// come) loses up to half a window for good, and after a few such reads
// the stream stalls: the peer waits for credit that never comes. So the
// deadline bounds only the wait, a Read of nothing, which never owes an
// update, and the bytes are taken with no deadline (the Read cannot wait
// then: there is something to read).
func (s *Stream) read(b []byte) (int, error) {
	s.dlMu.Lock()
	deadline := s.rdl
	s.dlMu.Unlock()
	if err := s.wait(deadline); err != nil {
		return 0, err
	}
	n, err := s.ms.Read(b)
	if n > 0 {
		// The error is the update's, which a session that ended
		// refuses: the next Read says so, after the bytes still
		// buffered if the peer had finished the stream.
		err = nil
	}
	return n, err
}

// wait waits until a Read of the multiplexer's stream would not block, or
// until deadline (zero: no deadline), taking no byte. It returns the
// error that Read would return: ErrTimeout at the deadline, EOF, a reset.
func (s *Stream) wait(deadline time.Time) error {
	s.dlMu.Lock()
	s.waiting = true
	if !deadline.IsZero() {
		s.ms.SetReadDeadline(deadline)
		s.armed = true
	}
	s.dlMu.Unlock()
	_, err := s.ms.Read(nil)
	s.dlMu.Lock()
	s.waiting = false
	if s.armed {
		s.ms.SetReadDeadline(time.Time{})
		s.armed = false
	}
	s.dlMu.Unlock()
	return err
}

// muxReader reads the stream's bytes as Read does, without the reply and
// the mapping of errors.
type muxReader Stream

func (r *muxReader) Read(b []byte) (int, error) { return (*Stream)(r).read(b) }

// Write sends bytes to the peer.
func (s *Stream) Write(b []byte) (int, error) {
	n, err := s.ms.Write(b)
	return n, s.err(err)
}

// CloseWrite tells the peer no more bytes will come; reading goes on.
func (s *Stream) CloseWrite() error { return s.err(s.ms.CloseWrite()) }

// Close ends the stream in both directions. If the peer may still be
// sending, it is told to stop: a reset (the multiplexer's RST, as TCP's),
// after which the peer's reads and writes fail with ErrReset, and never
// with a clean end of stream. What it still sends is dropped.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.sess.untrack(s.ms.StreamID())
		if s.readEOF.Load() {
			s.ms.Close()
			return
		}
		s.ms.Reset()
	})
	return nil
}

// err maps the multiplexer's errors to this package's.
func (s *Stream) err(err error) error {
	var reset *yamux.StreamError
	var gone *yamux.GoAwayError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &reset) && reset.Remote, err == yamux.ErrStreamReset:
		return ErrReset
	case errors.As(err, &gone), s.sess.mux.IsClosed():
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return err
}

// LocalAddr returns the tunnel connection's local address.
func (s *Stream) LocalAddr() net.Addr { return s.sess.conn.LocalAddr() }

// RemoteAddr returns the tunnel connection's remote address.
func (s *Stream) RemoteAddr() net.Addr { return s.sess.conn.RemoteAddr() }

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.ms.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline: it bounds a Read's wait for
// bytes (see read).
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	s.rdl = t
	if s.waiting {
		// Move the deadline of the read that waits.
		s.ms.SetReadDeadline(t)
		s.armed = !t.IsZero()
	}
	return nil
}

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.ms.SetWriteDeadline(t) }
