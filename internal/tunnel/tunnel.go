// Package tunnel runs one edge⇄connector session on an established TLS
// connection: the versioned handshake, keepalives, and the multiplexed
// streams that carry client connections. It is the only package that knows
// the multiplexer.
//
// The connector side:
//
//	sess, welcome, err := tunnel.Client(ctx, tlsConn, hello, cfg)
//	for {
//		st, hdr, err := sess.Accept()
//		// dial the back-end that hdr.Service names, then st.Reply(...)
//	}
//
// The edge side:
//
//	sess, hello, err := tunnel.Server(ctx, tlsConn, cfg, admit)
//	st, err := sess.Open(wire.StreamOpen{Service: "db", Client: addr})
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
	"github.com/xtaci/smux"
)

// Config tunes a session. The zero value of a field means its default.
type Config struct {
	// KeepaliveInterval is how often each side sends a ping; default 5s.
	KeepaliveInterval time.Duration
	// KeepaliveTimeout is how long a session may receive nothing before
	// it is declared dead and closed; default 15s.
	KeepaliveTimeout time.Duration
	// HandshakeTimeout bounds the handshake; default 10s.
	HandshakeTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.KeepaliveInterval <= 0 {
		c.KeepaliveInterval = 5 * time.Second
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = 15 * time.Second
	}
	if c.KeepaliveTimeout <= c.KeepaliveInterval {
		c.KeepaliveTimeout = 3 * c.KeepaliveInterval
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	return c
}

func (c Config) mux() *smux.Config {
	m := smux.DefaultConfig()
	m.Version = 2 // per-stream flow control: a stalled stream cannot block others
	m.KeepAliveInterval = c.KeepaliveInterval
	m.KeepAliveTimeout = c.KeepaliveTimeout
	m.MaxFrameSize = 32 << 10
	m.MaxReceiveBuffer = 8 << 20
	m.MaxStreamBuffer = 1 << 20
	return m
}

// ErrClosed is returned by a closed session.
var ErrClosed = errors.New("tunnel closed")

// Session is one tunnel connection after a successful handshake. Its
// methods are safe for concurrent use.
type Session struct {
	conn      net.Conn
	mux       *smux.Session
	closeOnce sync.Once
}

func newSession(conn net.Conn, m *smux.Session) *Session {
	return &Session{conn: conn, mux: m}
}

// Client runs the connector's side of the handshake on conn and starts the
// multiplexer. The session owns conn from then on; on error conn is closed.
func Client(ctx context.Context, conn net.Conn, hello wire.Hello, cfg Config) (*Session, wire.Welcome, error) {
	cfg = cfg.withDefaults()
	var welcome wire.Welcome
	err := Exchange(ctx, conn, cfg.HandshakeTimeout, func() error {
		if err := wire.WriteMessage(conn, wire.KindHello, hello); err != nil {
			return fmt.Errorf("send hello: %w", err)
		}
		return wire.ReadExpect(conn, wire.KindWelcome, &welcome)
	})
	if err != nil {
		conn.Close()
		return nil, welcome, err
	}
	m, err := smux.Client(conn, cfg.mux())
	if err != nil {
		conn.Close()
		return nil, welcome, fmt.Errorf("start multiplexer: %w", err)
	}
	return newSession(conn, m), welcome, nil
}

// ReadOpening is the edge's first step on a new tunnel-port connection:
// it exchanges preambles and reads the connector's first message (a Hello
// or an EnrollRequest), under the handshake timeout and ctx.
func ReadOpening(ctx context.Context, conn net.Conn, cfg Config) (wire.Kind, []byte, error) {
	cfg = cfg.withDefaults()
	var kind wire.Kind
	var body []byte
	err := Exchange(ctx, conn, cfg.HandshakeTimeout, func() error {
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

// Server answers a Hello that the edge has admitted with welcome and
// starts the multiplexer. The session owns conn; on error conn is closed.
func Server(conn net.Conn, cfg Config, welcome wire.Welcome) (*Session, error) {
	cfg = cfg.withDefaults()
	conn.SetWriteDeadline(time.Now().Add(cfg.HandshakeTimeout))
	if err := wire.WriteMessage(conn, wire.KindWelcome, welcome); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send welcome: %w", err)
	}
	conn.SetWriteDeadline(time.Time{})
	m, err := smux.Server(conn, cfg.mux())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start multiplexer: %w", err)
	}
	return newSession(conn, m), nil
}

// Exchange exchanges preambles on conn and then runs fn, all within
// timeout and ctx: a peer that stalls cannot hold the caller.
func Exchange(ctx context.Context, conn net.Conn, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := Preambles(conn); err != nil {
		return err
	}
	if err := fn(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return conn.SetDeadline(time.Time{})
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
	ms, err := s.mux.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", s.closedErr(err))
	}
	if _, err := ms.Write(hdr); err != nil {
		ms.Close()
		return nil, fmt.Errorf("send stream header: %w", s.closedErr(err))
	}
	return &Stream{ms: ms, needReply: true}, nil
}

// Accept waits for the edge to open a stream. The caller owns the stream:
// it reads the header with ReadHeader and answers with Reply.
func (s *Session) Accept() (*Stream, error) {
	ms, err := s.mux.AcceptStream()
	if err != nil {
		return nil, s.closedErr(err)
	}
	return &Stream{ms: ms}, nil
}

// NumStreams reports the streams open on the session.
func (s *Session) NumStreams() int { return s.mux.NumStreams() }

// Done is closed when the session has ended, for any reason.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool { return s.mux.IsClosed() }

// RemoteAddr is the peer's network address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Close ends the session and every stream on it. It is idempotent.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.mux.Close()
		s.conn.Close()
	})
	return nil
}

func (s *Session) closedErr(err error) error {
	if s.mux.IsClosed() || errors.Is(err, smux.ErrGoAway) {
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return err
}
