// Package tunnel runs one edge⇄connector session on an established TLS
// connection: the versioned handshake, keepalives, the control stream, and
// the multiplexed streams that carry client connections. It is the only
// package that knows the multiplexer (hashicorp/yamux; see
// docs/decisions.md).
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
// then still calls Close. Cause then says why, if the peer was at fault:
// silent, not reading, or breaking the protocol (a connector that opens
// streams, a flood of the multiplexer's pings). The frames themselves,
// and the protocol flow, are defined in package wire.
//
// # Streams, half-close and reset
//
// Stream.CloseWrite is a half-close: the peer reads EOF and may go on
// sending. Stream.Close is a full close; if the peer may still be sending,
// Close also tells it so on the control stream (a reset, as TCP's RST), and
// the peer's stream fails with ErrReset instead of blocking on a window that
// nobody will open again. The multiplexer's FIN for a reset stream waits
// until the peer has closed its side, so that the peer never takes the
// abort for a clean end of stream. A stream of a session that has ended
// fails with ErrClosed, never with a clean EOF.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
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
}

// defaultHandshakeTimeout is Config.HandshakeTimeout's default.
const defaultHandshakeTimeout = 10 * time.Second

// resolve returns c with its defaults filled in, or an error saying what
// is wrong with it.
func (c Config) resolve() (Config, error) {
	if c.KeepaliveInterval < 0 || c.KeepaliveTimeout < 0 || c.HandshakeTimeout < 0 {
		return c, fmt.Errorf("tunnel config: negative duration (keepalive interval %s, keepalive timeout %s, handshake timeout %s)", c.KeepaliveInterval, c.KeepaliveTimeout, c.HandshakeTimeout)
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
	if c.KeepaliveTimeout <= c.KeepaliveInterval {
		return c, fmt.Errorf("tunnel config: the keepalive timeout (%s) must be longer than the keepalive interval (%s), or a live peer's ping could come too late", c.KeepaliveTimeout, c.KeepaliveInterval)
	}
	return c, nil
}

// Window is each stream's receive window: the bytes a peer may send ahead
// of the reader. See docs/decisions.md for the measurements behind it.
const Window = 1 << 20

func (c Config) mux() *yamux.Config {
	m := yamux.DefaultConfig()
	m.AcceptBacklog = acceptBacklog
	// Liveness is ours (keepalive.go): yamux's keepalive and its stream
	// open timeout both end a healthy session that is merely busy.
	m.EnableKeepAlive = false
	m.KeepAliveInterval = c.KeepaliveInterval // unused, but must be set
	m.StreamOpenTimeout = 0
	// How long a frame may wait to be handed to the connection: only a
	// safety valve, since a dead peer is noticed by its silence first.
	m.ConnectionWriteTimeout = max(time.Minute, 4*c.KeepaliveTimeout)
	m.MaxStreamWindowSize = Window
	// A half-closed stream may carry a long response: never time it out.
	// Aborted streams are reset on the control stream instead.
	m.StreamCloseTimeout = 0
	m.LogOutput = nil
	m.Logger = log.New(io.Discard, "", 0)
	return m
}

// acceptBacklog bounds the streams the peer has opened that Accept has
// not returned yet.
const acceptBacklog = 4096

// ErrClosed is returned by a closed session and by the streams it carried.
var ErrClosed = errors.New("tunnel closed")

// ErrReset is returned by a stream that the peer has aborted.
var ErrReset = errors.New("stream reset by peer")

// Session is one tunnel connection after a successful handshake. Its
// methods are safe for concurrent use.
type Session struct {
	conn    net.Conn
	reads   *readTap     // conn, as the multiplexer reads it
	bw      *batchWriter // conn, as the multiplexer writes it
	mux     *yamux.Session
	ctrl    net.Conn
	done    chan struct{}
	pingNow chan struct{}
	// cause is why the session ended (see Cause); it is set before done
	// is closed.
	cause error
	// sweeping is set while a shrinkIdle sweep runs (sweepSoon).
	sweeping atomic.Bool
	// goodbye is set when the peer said it closes the session on purpose;
	// ctrlDone is closed when the control stream has been read to its end.
	goodbye  atomic.Bool
	ctrlDone chan struct{}

	// ctrlMu serializes writes on the control stream.
	ctrlMu sync.Mutex

	// mu guards streams, resetting, early, accepted and the closing of done.
	mu      sync.Mutex
	streams map[uint32]*Stream
	// resetting holds the streams this side has reset and closed, until
	// the peer closes its side too; see finishReset.
	resetting map[uint32]*yamux.Stream
	// early holds resets for streams the peer opened that Accept has not
	// returned yet (at most acceptBacklog); accepted is the highest stream
	// id Accept returned. Only a client session accepts streams.
	early    map[uint32]bool
	accepted uint32
	accepts  bool

	closeOnce sync.Once
	// wg counts every goroutine the session starts: readControl,
	// keepalive, pinger, the watcher of the multiplexer, the reset
	// finishers and the buffer sweeps. Close waits for it.
	wg sync.WaitGroup
}

// taps puts the tunnel's watchers between conn and the multiplexer: it
// reads conn through a readTap and writes it through a batchWriter. The
// peer may open maxOpens streams; 0 means any.
func taps(conn net.Conn, cfg Config, maxOpens uint64) (*readTap, *batchWriter) {
	reads := newReadTap(conn, maxOpens)
	return reads, newBatchWriter(reads, cfg.KeepaliveTimeout, &reads.answered)
}

func newSession(conn net.Conn, reads *readTap, bw *batchWriter, m *yamux.Session, ctrl net.Conn, accepts bool, cfg Config) *Session {
	s := &Session{conn: conn, reads: reads, bw: bw, mux: m, ctrl: ctrl, done: make(chan struct{}), pingNow: make(chan struct{}, 1), ctrlDone: make(chan struct{}),
		streams: make(map[uint32]*Stream), resetting: make(map[uint32]*yamux.Stream), early: make(map[uint32]bool), accepts: accepts}
	reads.sess.Store(s)
	s.wg.Go(s.readControl)
	s.wg.Go(func() { s.keepalive(cfg.KeepaliveInterval, cfg.KeepaliveTimeout) })
	s.wg.Go(s.pinger)
	s.wg.Go(func() {
		select {
		case <-m.CloseChan():
			s.end()
		case <-s.done:
		}
	})
	return s
}

// Client runs the connector's side of the handshake on conn, starts the
// multiplexer and opens the control stream. The session owns conn from
// then on; on error conn is closed.
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
	reads, bw := taps(conn, cfg, 0)
	m, err := yamux.Client(bw, cfg.mux())
	if err != nil {
		bw.Close()
		return nil, welcome, fmt.Errorf("start multiplexer: %w", err)
	}
	ctrl, err := m.OpenStream()
	if err != nil {
		m.Close()
		return nil, welcome, fmt.Errorf("open control stream: %w", err)
	}
	return newSession(conn, reads, bw, m, ctrl, true, cfg), welcome, nil
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
// the multiplexer and accepts the connector's control stream. The session
// owns conn; on error conn is closed.
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
	// The connector opens its control stream, and no other.
	reads, bw := taps(conn, cfg, 1)
	m, err := yamux.Server(bw, cfg.mux())
	if err != nil {
		bw.Close()
		return nil, fmt.Errorf("start multiplexer: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.HandshakeTimeout)
	defer cancel()
	ctrl, err := m.AcceptStreamWithContext(ctx)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("accept control stream: %w", err)
	}
	return newSession(conn, reads, bw, m, ctrl, false, cfg), nil
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
	ms, err := s.mux.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", s.closedErr(err))
	}
	st := s.track(ms, true)
	if _, err := ms.Write(hdr); err != nil {
		st.Close()
		return nil, fmt.Errorf("send stream header: %w", s.closedErr(err))
	}
	return st, nil
}

// Accept waits for the edge to open a stream. The caller owns the stream:
// it reads the header with ReadHeader and answers with Reply.
func (s *Session) Accept() (*Stream, error) {
	ms, err := s.mux.AcceptStream()
	if err != nil {
		return nil, s.closedErr(err)
	}
	return s.track(ms, false), nil
}

func (s *Session) track(ms *yamux.Stream, needReply bool) *Stream {
	st := &Stream{ms: ms, sess: s, needReply: needReply}
	id := ms.StreamID()
	s.mu.Lock()
	s.streams[id] = st
	reset := s.early[id]
	delete(s.early, id)
	if !needReply && id > s.accepted {
		s.accepted = id
	}
	s.mu.Unlock()
	if reset {
		st.resetByPeer()
	}
	return st
}

func (s *Session) untrack(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

// sendReset tells the peer that stream id is aborted.
func (s *Session) sendReset(id uint32) {
	if err := s.writeControl(wire.Control{Type: wire.ControlReset, Stream: id}); err != nil {
		// A control stream that cannot take five bytes means a broken
		// session: end it rather than leave the peer's stream hanging.
		s.end()
	}
}

// writeControl writes one control frame.
func (s *Session) writeControl(c wire.Control) error {
	var b [wire.ControlSize]byte
	s.ctrlMu.Lock()
	defer s.ctrlMu.Unlock()
	_, err := s.ctrl.Write(wire.AppendControl(b[:0], c))
	return err
}

// finishReset closes ms, which this side has reset, once the peer has
// closed its side or reset it too, and discards what the peer sends until
// then. A FIN sent at once could reach the peer's reader before the reset
// does, and pass there for a clean end of stream.
func (s *Session) finishReset(ms *yamux.Stream) {
	id := ms.StreamID()
	s.mu.Lock()
	closed := s.IsClosed()
	if !closed {
		s.resetting[id] = ms
		// done is open, so the goroutine that waits for it holds wg
		// above zero.
		s.wg.Go(func() {
			ms.SetReadDeadline(time.Time{})
			io.Copy(io.Discard, ms)
			ms.Close()
			s.mu.Lock()
			delete(s.resetting, id)
			s.mu.Unlock()
		})
	}
	s.mu.Unlock()
	if closed {
		ms.Close()
	}
}

// readControl reads control frames until the session ends. A frame it
// does not understand ends the session: the peer is broken.
func (s *Session) readControl() {
	defer close(s.ctrlDone)
	for {
		c, err := wire.ReadControl(s.ctrl)
		if err != nil {
			s.end()
			return
		}
		switch c.Type {
		case wire.ControlPing:
			// Its arrival was the point.
		case wire.ControlGoodbye:
			s.goodbye.Store(true)
		case wire.ControlReset:
			s.resetByPeer(c.Stream)
		}
	}
}

// resetByPeer handles the peer's reset of stream id.
func (s *Session) resetByPeer(id uint32) {
	s.mu.Lock()
	st, ms := s.streams[id], s.resetting[id]
	// A stream the peer (a yamux server: even ids) opened that Accept
	// has not returned yet starts out reset.
	if st == nil && ms == nil && s.accepts && id%2 == 0 && id > s.accepted && len(s.early) < acceptBacklog {
		s.early[id] = true
	}
	s.mu.Unlock()
	if st != nil {
		st.resetByPeer()
	}
	if ms != nil {
		// Both sides reset the stream: neither waits for the other.
		ms.Close()
	}
}

// NumStreams reports the client streams open on the session.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Done is closed when the session has ended, for any reason.
func (s *Session) Done() <-chan struct{} { return s.done }

// Cause reports why the session ended when the peer was at fault:
// ErrPeerSilent, ErrPeerNotReading, or an error that wraps ErrProtocol
// and says what the peer did. It is nil while the session runs, and when
// it ended otherwise: closed by this side or the peer, or a broken
// connection.
func (s *Session) Cause() error {
	if !s.IsClosed() {
		return nil
	}
	return s.cause
}

// IsClosed reports whether the session has ended.
func (s *Session) IsClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// RemoteAddr is the peer's network address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Close ends the session and every stream on it, and returns once every
// goroutine the session started has ended: its own, the batch writer's
// and the multiplexer's. It is idempotent. It must not be called from a
// function the session calls (a NotifyRead callback).
func (s *Session) Close() error {
	s.end()
	// The multiplexer's Close waits for its receive and send loops, also
	// when another goroutine is closing it already.
	s.mux.Close()
	s.wg.Wait()
	return nil
}

// end ends the session and every stream on it without waiting for the
// session's goroutines, which call it themselves.
func (s *Session) end() { s.endFor(nil) }

// endFor ends the session as end does, for cause, or if cause is nil,
// for what the connection's reader or writer found wrong with the peer,
// if anything. The first call's cause is the session's.
func (s *Session) endFor(cause error) {
	first := false
	s.closeOnce.Do(func() {
		if cause == nil {
			cause = s.peerFault()
		}
		s.mu.Lock()
		s.cause = cause
		close(s.done)
		s.mu.Unlock()
		first = true
	})
	if !first {
		return
	}
	if s.cause != nil {
		// A peer at fault gets no goodbye: it may not read it.
		abort(s.conn)
	}
	s.mux.Close()
	s.conn.Close()
	// Outside closeOnce: a stream told may close itself, and so call end.
	s.readableAll()
}

// shutDownByPeer reports, once the session has ended, whether the peer
// ended it on purpose (see Shutdown). It waits for the control stream to
// be read to its end, which a closed session's is at once.
func (s *Session) shutDownByPeer() bool {
	<-s.ctrlDone
	return s.goodbye.Load()
}

// Shutdown closes the session on purpose, after its streams have
// finished or been closed: it tells the peer first, so that the peer takes
// the ends of streams it has not read yet for complete ones, not cut off.
func (s *Session) Shutdown() error {
	if !s.IsClosed() {
		s.ctrl.SetWriteDeadline(time.Now().Add(time.Second))
		s.writeControl(wire.Control{Type: wire.ControlGoodbye})
		// Close drops what is still gathered for writing: the goodbye
		// and the streams' last bytes must leave first.
		s.bw.Flush(time.Second)
	}
	return s.Close()
}

func (s *Session) closedErr(err error) error {
	if s.IsClosed() || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrRemoteGoAway) {
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return err
}
