// Package tunnel runs one edge⇄connector session on an established TLS
// connection: the versioned handshake, keepalives, and the multiplexed
// streams that carry client connections. It is the only package that
// knows the multiplexer (package mux; see docs/decisions.md).
//
// The connector side:
//
//	sess, welcome, err := tunnel.Client(ctx, tlsConn, hello, cfg)
//	defer sess.Close()
//	for {
//		st, err := sess.Accept() // fails once the session has ended
//		hdr, err := st.ReadHeader(timeout)
//		// dial the back-end that hdr.Service names, then
//		// st.Reply(wire.StreamReply{Code: wire.CodeOK, Service: hdr.Service})
//	}
//
// The edge side, after ReadOpening returned a Hello it admits:
//
//	sess, err := tunnel.Server(tlsConn, cfg, welcome)
//	defer sess.Close()
//	st, err := sess.Open(wire.StreamOpen{Service: "db", Client: addr})
//
// The session owns the connection. Close (or Shutdown, which tells the
// peer first) ends it and returns once every goroutine it started has
// ended; Done is closed as soon as it ends for any reason, and the owner
// then still calls Close, unless it has AfterEnd call it back once the
// session has ended and let go of everything (an owner of thousands of
// sessions then keeps no goroutine per session waiting). Cause then says why, if the peer was at fault:
// silent, not reading, or breaking the protocol (a connector that opens
// streams, a flood of the multiplexer's pings). The handshake's messages,
// the stream headers and the protocol flow are defined in package wire,
// the multiplexer's frames in package mux.
//
// # Streams, half-close and reset
//
// Stream.CloseWrite is a half-close: the peer reads EOF and may go on
// sending. Stream.Close is a full close; if the peer may still be sending,
// Close resets the stream (the multiplexer's RST, as TCP's), and the
// peer's stream fails with ErrReset instead of blocking on a window that
// nobody will open again, and never passes for a clean end of stream. A
// stream of a session that has ended fails with ErrClosed, never with a
// clean EOF, unless the peer had finished it.
//
// # Memory
//
// The bytes a peer can make a session hold for streams that nobody reads
// are bounded by Config.ReceiveBudget plus InitialWindow per stream; a
// stream at rest holds no goroutine and no buffer (see package mux and
// notify.go).
package tunnel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/mux"
	"github.com/sallyport/sallyport/internal/wire"
)

// Config tunes a session. The zero value of a field means its default; a
// Config that cannot work is refused (Client, Server and ReadOpening
// return an error), never repaired.
type Config struct {
	// KeepaliveInterval is how often each side pings; zero means
	// wire.DefaultKeepaliveInterval.
	KeepaliveInterval time.Duration
	// KeepaliveTimeout is the longest a dead peer (no FIN, no answer) goes
	// unnoticed: a peer silent this long ends the session, and so does a
	// peer that takes nothing it is sent for this long. Zero means
	// wire.DefaultKeepaliveTimeout. It must exceed KeepaliveInterval.
	KeepaliveTimeout time.Duration
	// HandshakeTimeout bounds the handshake; zero means 10s.
	HandshakeTimeout time.Duration
	// ReceiveBudget bounds, in bytes, how far the streams' receive
	// windows may grow beyond InitialWindow each, all streams of the
	// session together (see package mux); zero means
	// DefaultReceiveBudget.
	ReceiveBudget int64
}

// defaultHandshakeTimeout is Config.HandshakeTimeout's default.
const defaultHandshakeTimeout = 10 * time.Second

// resolve returns c with its defaults filled in, or an error saying what
// is wrong with it.
func (c Config) resolve() (Config, error) {
	if c.KeepaliveInterval < 0 || c.KeepaliveTimeout < 0 || c.HandshakeTimeout < 0 {
		return c, fmt.Errorf("tunnel config: negative duration (keepalive interval %s, keepalive timeout %s, handshake timeout %s)", c.KeepaliveInterval, c.KeepaliveTimeout, c.HandshakeTimeout)
	}
	if c.ReceiveBudget < 0 {
		return c, fmt.Errorf("tunnel config: negative receive budget (%d bytes)", c.ReceiveBudget)
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = wire.DefaultKeepaliveInterval
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = wire.DefaultKeepaliveTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = defaultHandshakeTimeout
	}
	if c.ReceiveBudget == 0 {
		c.ReceiveBudget = DefaultReceiveBudget
	}
	if c.KeepaliveTimeout <= c.KeepaliveInterval {
		return c, fmt.Errorf("tunnel config: the keepalive timeout (%s) must be longer than the keepalive interval (%s), or a live peer's ping could come too late", c.KeepaliveTimeout, c.KeepaliveInterval)
	}
	return c, nil
}

// InitialWindow is each stream's receive window when it opens: the bytes
// a peer may send ahead of the reader. The protocol fixes it.
const InitialWindow = mux.InitialWindow

// MaxWindow is the largest a stream's receive window grows to, when its
// reader keeps up with a long fat link (see mux.MaxWindow).
const MaxWindow = mux.MaxWindow

// DefaultReceiveBudget is Config.ReceiveBudget's default: room for two
// streams at their largest window (MaxWindow), or eight at the 8 MiB a
// 1 Gbit/s, 50 ms link needs without loss.
const DefaultReceiveBudget = 64 << 20

// mux returns the multiplexer's settings for the side that opens streams
// (the edge: server) or accepts them (the connector).
func (c Config) mux(server bool) mux.Config {
	return mux.Config{Opens: server, ReceiveBudget: c.ReceiveBudget, AcceptBacklog: acceptBacklog}
}

// acceptBacklog bounds the streams the peer has opened that Accept has
// not returned yet, and the streams this side has opened that the peer
// has not accepted yet.
const acceptBacklog = 4096

// ErrClosed is wrapped by the errors of a closed session and of the
// streams it carried.
var ErrClosed = mux.ErrClosed

// ErrReset is returned by a stream that the peer has aborted.
var ErrReset = mux.ErrReset

// Session is one tunnel connection after a successful handshake. Its
// methods are safe for concurrent use.
type Session struct {
	conn net.Conn
	mux  *mux.Session
	wg   sync.WaitGroup // the keepalive goroutine, which also ends the session

	// end holds the function to call at the session's end (AfterEnd).
	end struct {
		sync.Mutex
		// over is set once the multiplexer's goroutines have returned.
		over bool
		f    func()
	}
}

// start runs the multiplexer on conn. The session owns conn.
func start(conn net.Conn, cfg Config, server bool) *Session {
	mc := &muxConn{Conn: conn, tr: transportOf(conn), timeout: cfg.KeepaliveTimeout}
	s := &Session{conn: conn, mux: mux.New(mc, cfg.mux(server))}
	s.wg.Go(func() {
		s.keepalive(cfg.KeepaliveInterval, cfg.KeepaliveTimeout)
		// The session has ended: wait for the multiplexer's goroutines
		// here, in a goroutine the session has anyway, so that an owner
		// told by AfterEnd needs no goroutine of its own waiting on Done.
		s.mux.Close()
		s.ended()
	})
	return s
}

// AfterEnd arranges for f to be called once, when the session has ended
// and the multiplexer's goroutines have returned: from the session's
// last goroutine, or before AfterEnd returns if that is so already. It
// lets an owner of many sessions keep no goroutine per session waiting on
// Done. f must not call Close or Shutdown (they wait for f), and need not:
// once f runs, the session holds no connection and no goroutine but the
// one running f, which ends when f returns. A later call replaces an f
// not yet called.
func (s *Session) AfterEnd(f func()) {
	s.end.Lock()
	if !s.end.over {
		s.end.f = f
		s.end.Unlock()
		return
	}
	s.end.Unlock()
	f()
}

// ended calls the AfterEnd function, if any, once the session is over.
func (s *Session) ended() {
	s.end.Lock()
	s.end.over = true
	f := s.end.f
	s.end.f = nil
	s.end.Unlock()
	if f != nil {
		f()
	}
}

// Client runs the connector's side of the handshake on conn and starts
// the multiplexer. The session owns conn from then on; on error conn is
// closed.
func Client(ctx context.Context, conn net.Conn, hello wire.Hello, cfg Config) (*Session, wire.Welcome, error) {
	var welcome wire.Welcome
	cfg, err := cfg.resolve()
	if err != nil {
		conn.Close()
		return nil, welcome, err
	}
	err = Handshake(ctx, conn, cfg.HandshakeTimeout, func() error {
		if err := wire.WriteMessage(conn, wire.KindHello, hello); err != nil {
			return fmt.Errorf("send hello: %w", err)
		}
		return wire.ReadExpect(conn, wire.KindWelcome, &welcome)
	})
	if err != nil {
		conn.Close()
		return nil, welcome, err
	}
	return start(conn, cfg, false), welcome, nil
}

// ReadOpening is the edge's first step on a new tunnel-port connection:
// it exchanges preambles and reads the connector's first message (a Hello
// or an EnrollRequest), under the handshake timeout and ctx.
func ReadOpening(ctx context.Context, conn net.Conn, cfg Config) (wire.Kind, []byte, error) {
	var kind wire.Kind
	var body []byte
	cfg, err := cfg.resolve()
	if err != nil {
		return kind, body, err
	}
	err = Handshake(ctx, conn, cfg.HandshakeTimeout, func() error {
		var err error
		kind, body, err = wire.ReadMessage(conn)
		return err
	})
	return kind, body, err
}

// Refuse sends a refusal and closes conn.
func Refuse(conn net.Conn, r *wire.Refusal) error {
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := wire.WriteMessage(conn, wire.KindRefusal, r)
	conn.Close()
	return err
}

// Server answers a Hello that the edge has admitted with welcome, starts
// the multiplexer and waits, within the handshake timeout, for the
// connector's first frame (a ping it sends at once): so a connector that
// goes silent after the Welcome, or answers it with bytes that are no
// multiplexer frame, fails the handshake. The session owns conn; on error
// conn is closed.
func Server(conn net.Conn, cfg Config, welcome wire.Welcome) (*Session, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetWriteDeadline(time.Now().Add(cfg.HandshakeTimeout))
	if err := wire.WriteMessage(conn, wire.KindWelcome, welcome); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send welcome: %w", err)
	}
	conn.SetWriteDeadline(time.Time{})
	s := start(conn, cfg, true)
	timer := time.NewTimer(cfg.HandshakeTimeout)
	defer timer.Stop()
	select {
	case <-s.mux.Spoke():
		return s, nil
	case <-s.mux.Done():
		s.Close()
		return nil, fmt.Errorf("start multiplexer: %w", cmp.Or(s.Cause(), ErrClosed))
	case <-timer.C:
		s.Close()
		return nil, fmt.Errorf("start multiplexer: no frame from the connector within %s: %w", cfg.HandshakeTimeout, os.ErrDeadlineExceeded)
	}
}

// Handshake runs the opening of a tunnel connection under a deadline: it
// exchanges preambles on conn and then runs fn, which writes or reads the
// opening messages, all within timeout and ctx, so that a peer that
// stalls cannot hold the caller. It leaves conn open, with no deadline,
// to its caller.
func Handshake(ctx context.Context, conn net.Conn, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := Preambles(conn); err != nil {
		return canceled(ctx, err)
	}
	if err := fn(); err != nil {
		return canceled(ctx, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return conn.SetDeadline(time.Time{})
}

// canceled names the end of ctx as the cause of err once ctx has ended:
// the past deadline that Handshake sets to abort is not a timeout.
func canceled(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

// Preambles writes this side's preamble and reads the peer's. Both sides
// write first, so each learns the other's version whatever it is.
func Preambles(conn net.Conn) error {
	werr := make(chan error, 1)
	go func() { werr <- wire.WritePreamble(conn, wire.Version) }()
	rerr := wire.ReadPreamble(conn, wire.Version)
	if err := <-werr; err != nil && rerr == nil {
		return fmt.Errorf("send preamble: %w", err)
	}
	return rerr
}

// Open opens a stream for a client connection and sends its header. The
// reply is read by the returned stream's first Read, so the caller can
// send client bytes at once. The caller owns the stream.
func (s *Session) Open(h wire.StreamOpen) (*Stream, error) {
	hdr, err := wire.AppendStreamOpen(make([]byte, 0, 64), h)
	if err != nil {
		return nil, err
	}
	// It waits only while acceptBacklog streams wait for the peer's
	// Accept, and ends with the session.
	ms, err := s.mux.Open(context.Background())
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	st := &Stream{ms: ms, sess: s, needReply: true}
	if _, err := ms.Write(hdr); err != nil {
		st.Close()
		return nil, fmt.Errorf("send stream header: %w", err)
	}
	return st, nil
}

// Accept waits for the edge to open a stream. The caller owns the stream:
// it reads the header with ReadHeader and answers with Reply.
func (s *Session) Accept() (*Stream, error) {
	ms, err := s.mux.Accept()
	if err != nil {
		return nil, err
	}
	return &Stream{ms: ms, sess: s}, nil
}

// NumStreams reports the client streams open on the session.
func (s *Session) NumStreams() int { return s.mux.NumStreams() }

// LastRead reports when the peer was last heard from: the last read of
// the connection that gave bytes (the session's start before that). A
// live peer is heard from at least once a keepalive interval (its pings,
// or its answers to ours).
func (s *Session) LastRead() time.Time { return s.mux.LastRead() }

// Done is closed when the session has ended, for any reason.
func (s *Session) Done() <-chan struct{} { return s.mux.Done() }

// Cause reports why the session ended when the peer was at fault:
// ErrPeerSilent, ErrPeerNotReading, or an error that wraps ErrProtocol
// and says what the peer did. It is nil while the session runs, and when
// it ended otherwise: closed by this side or the peer, or a broken
// connection.
func (s *Session) Cause() error { return fault(s.mux.Err()) }

// fault returns err if it says the peer was at fault, else nil.
func fault(err error) error {
	if errors.Is(err, ErrPeerSilent) || errors.Is(err, ErrPeerNotReading) || errors.Is(err, ErrProtocol) {
		return err
	}
	return nil
}

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return s.mux.Err() != nil }

// RemoteAddr is the peer's network address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Close ends the session and every stream on it, and returns once every
// goroutine it started has ended. It is idempotent. It must not be
// called from a function the session calls (a NotifyRead callback).
func (s *Session) Close() error {
	s.mux.Close()
	s.wg.Wait()
	return nil
}

// Shutdown closes the session on purpose, after its streams have
// finished or been closed: it sends the multiplexer's go-away behind
// everything the streams have sent, and once that has been written waits
// for the peer to close the connection (it ends its session on the
// go-away), all within a second; then it closes. The streams the peer has
// not read to their end yet end cleanly if this side finished them, and
// fail with ErrClosed if not.
//
// The peer closes first because a close of ours while its last frames (a
// ping's answer, a window update) lie unread here makes the kernel reset
// the connection, and a reset makes the peer's kernel drop what it has
// received and not read yet: the end of a finished stream.
func (s *Session) Shutdown() error {
	if !s.IsClosed() {
		timer := time.NewTimer(time.Second)
		defer timer.Stop()
		select {
		case <-s.mux.GoAway():
			select {
			case <-s.mux.Done():
			case <-timer.C:
			}
		case <-timer.C:
		}
	}
	return s.Close()
}
