// Package mux carries many ordered byte streams over one connection, with
// flow control and a receive budget. It speaks yamux's v0 framing (see
// frame.go for the frames and the protocol flow) and is used by package
// tunnel only.
//
// One side opens streams (Config.Opens), the other accepts them:
//
//	s := mux.New(conn, mux.Config{Opens: true, ReceiveBudget: 64 << 20})
//	defer s.Close()
//	st, err := s.Open(ctx) // the peer's Accept returns it
//	st.Write(hello)        // at once: no wait for the peer's answer
//	st.CloseWrite()        // half-close: the peer reads EOF
//	io.Copy(dst, st)
//	st.Close()             // a reset if the peer had not finished
//
// A session owns its connection and runs two goroutines on it: one reads
// frames (reader.go) and one writes them (writer.go), each batch of
// frames with one Write. Close ends the session and waits for both.
//
// Memory: a stream's receive window starts at InitialWindow and grows,
// doubling up to MaxWindow, while its reader keeps up with a fast link;
// every byte of growth is reserved from the session's receive budget
// first, and a refusal only keeps the stream's window as it is (see
// flow.go). So the bytes a peer can make a session hold are at most the
// budget plus InitialWindow per stream. A stream at rest holds no buffer
// and no goroutine; Stream.NotifyRead says when it has something.
package mux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// InitialWindow is each stream's receive window when it opens, in each
// direction: what the sender may send before the receiver gives credit
// back. The protocol fixes it.
const InitialWindow = 256 << 10

// MaxWindow is the largest a stream's receive window grows to: 32 MiB
// carries 1 Gbit/s at up to 260 ms of round trip, or at 50 ms with room
// for the round trips a lossy link's recoveries add (data behind a lost
// segment waits for its retransmission before the reader sees it, and
// with it the credit). A longer data frame breaks the protocol.
const MaxWindow = 32 << 20

// DefaultAcceptBacklog is Config.AcceptBacklog's default.
const DefaultAcceptBacklog = 4096

// maxPeerPings bounds the peer's pings not answered yet (written): a
// peer with more breaks the protocol.
const maxPeerPings = 16

// maxFrame is the longest data frame this side sends.
const maxFrame = 64 << 10

// Config tunes a session. The zero value accepts streams, lets no window
// grow, and uses the defaults below.
type Config struct {
	// Opens is set on the side that opens streams; the other side only
	// accepts them, and a peer that opens on the wrong side breaks the
	// protocol.
	Opens bool
	// ReceiveBudget bounds how far the streams' receive windows may grow
	// beyond InitialWindow, all streams together, in bytes. Zero: no
	// window grows.
	ReceiveBudget int64
	// AcceptBacklog bounds the streams opened and not yet acknowledged by
	// the peer's Accept (Open waits beyond it), and the peer's streams not
	// yet accepted here (more are reset). Zero means DefaultAcceptBacklog.
	AcceptBacklog int
	// IdleShrink is how long a stream whose reader has taken everything
	// may receive nothing before its window goes back to InitialWindow
	// and gives its reservation back. Zero means one second.
	IdleShrink time.Duration
}

// ErrProtocol is wrapped by the error of a session that ended because the
// peer broke the protocol.
var ErrProtocol = errors.New("multiplexer protocol violation")

// ErrClosed is wrapped by the errors of a session that has ended, and of
// its streams that the peer had not finished: alone when the session was
// closed here, with the cause otherwise.
var ErrClosed = errors.New("session closed")

// ErrGoneAway is the cause of a session whose peer sent a go-away.
var ErrGoneAway = errors.New("the peer ended the session (go-away)")

// ErrReset is returned by a stream that the peer has reset.
var ErrReset = errors.New("stream reset by peer")

// ErrStreamClosed is returned by a stream closed here.
var ErrStreamClosed = fmt.Errorf("stream closed: %w", net.ErrClosed)

// ErrWriteClosed is returned by a Write after CloseWrite.
var ErrWriteClosed = errors.New("write on a stream after CloseWrite")

// errTimeout is returned when a deadline passes: a net.Error whose
// Timeout is true, as a net.Conn's.
var errTimeout = os.ErrDeadlineExceeded

// Session is one connection that carries streams. Its methods are safe
// for concurrent use.
type Session struct {
	conn    net.Conn
	cfg     Config
	backlog int
	// rd reads the connection, with no buffer of its own: an idle
	// session holds none (the tunnel's TLS connection buffers a record,
	// and its Transport lends a larger buffer beneath while bytes flow).
	rd     stampReader
	w      writer
	budget budget
	epoch  time.Time // the base of the monotonic times below

	lastRead atomic.Int64 // epoch nanoseconds of the last read with bytes
	rtt      atomic.Int64 // nanoseconds; 0 until measured
	// queued counts the frames queued to be written, handled the peer's
	// frames handled, answered the ping answers taken by the writer.
	queued, handled, answered atomic.Uint64
	// overflow is set once the control frames queued pass controlLimit.
	overflow atomic.Bool
	// sweep is set when a window growth was refused (see flow.go).
	sweep atomic.Bool

	// Owned by the reading goroutine.
	pings     uint64 // ping requests received
	lastSweep int64
	spoken    bool

	spoke chan struct{} // closed once the first frame has been handled
	done  chan struct{} // closed once the session has ended
	// err is why the session ended, streamErr what its streams return;
	// both are set before done is closed.
	err, streamErr error
	endOnce        sync.Once

	acceptWake chan struct{} // cap 1: an Accept waits
	openWake   chan struct{} // cap 1: an Open waits for the backlog

	// mu guards the stream table, the ids, the accept queue, the backlog
	// counters and the ping being timed. Lock order: mu, then a stream's
	// mu, then the writer's mu.
	mu          sync.Mutex
	streams     map[uint32]*Stream
	nextID      uint32 // the next id this side opens
	lastID      uint32 // the highest id the peer opened
	accepts     []*Stream
	unacked     int // streams opened here, not acknowledged yet
	openWaiting int
	pingID      uint32
	pingSent    int64 // epoch nanoseconds; 0 when no ping is timed

	wg sync.WaitGroup // the reading and writing goroutines
}

// New runs a session on conn, which it owns from then on (Close closes
// it), and sends a first ping to measure the round-trip time.
func New(conn net.Conn, cfg Config) *Session {
	s := &Session{
		conn:       conn,
		cfg:        cfg,
		backlog:    cfg.AcceptBacklog,
		epoch:      time.Now(),
		spoke:      make(chan struct{}),
		done:       make(chan struct{}),
		acceptWake: make(chan struct{}, 1),
		openWake:   make(chan struct{}, 1),
		streams:    make(map[uint32]*Stream),
		nextID:     2,
		budget:     budget{limit: cfg.ReceiveBudget},
	}
	if s.backlog <= 0 {
		s.backlog = DefaultAcceptBacklog
	}
	if s.cfg.IdleShrink <= 0 {
		s.cfg.IdleShrink = time.Second
	}
	s.w.wake = make(chan struct{}, 1)
	s.w.room = make(chan struct{}, 1)
	s.w.goAway = make(chan struct{})
	s.w.queued = &s.queued
	s.rd = stampReader{s}
	s.lastRead.Store(0)
	s.Ping()
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.read() }()
	go func() { defer s.wg.Done(); s.write() }()
	return s
}

// now returns the monotonic time since the session started.
func (s *Session) now() int64 { return int64(time.Since(s.epoch)) }

// stampReader reads the connection and stamps each read with bytes.
type stampReader struct{ s *Session }

func (r stampReader) Read(p []byte) (int, error) {
	n, err := r.s.conn.Read(p)
	if n > 0 {
		r.s.lastRead.Store(r.s.now())
	}
	return n, err
}

// Open opens a stream: it queues the opening and returns, so that the
// stream's first bytes follow it at once. It waits while the backlog of
// streams the peer has not accepted yet is full, until ctx ends.
func (s *Session) Open(ctx context.Context) (*Stream, error) {
	if !s.cfg.Opens {
		return nil, errors.New("open stream: this side of the session accepts streams, it does not open them")
	}
	s.mu.Lock()
	for s.unacked >= s.backlog && !s.ended() {
		s.openWaiting++
		s.mu.Unlock()
		var err error
		select {
		case <-s.openWake:
		case <-s.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.mu.Lock()
		s.openWaiting--
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("open stream: %d streams wait for the peer to accept them: %w", s.backlog, err)
		}
	}
	if s.ended() {
		s.mu.Unlock()
		return nil, s.streamErr
	}
	id := s.nextID
	if id > 1<<32-3 {
		s.mu.Unlock()
		return nil, errors.New("open stream: stream ids exhausted; open a new session")
	}
	s.nextID += 2
	st := newStream(s, id)
	s.streams[id] = st
	s.unacked++
	if s.unacked < s.backlog && s.openWaiting > 0 {
		wake(s.openWake)
	}
	s.appendControl(typeWindowUpdate, flagSYN, id, 0)
	s.mu.Unlock()
	return st, nil
}

// Accept waits for a stream the peer opened and acknowledges it. It
// fails once the session has ended.
func (s *Session) Accept() (*Stream, error) {
	for {
		s.mu.Lock()
		if s.ended() {
			s.mu.Unlock()
			return nil, s.streamErr
		}
		if len(s.accepts) > 0 {
			st := s.accepts[0]
			s.accepts[0] = nil
			s.accepts = s.accepts[1:]
			if len(s.accepts) > 0 {
				wake(s.acceptWake)
			}
			s.mu.Unlock()
			st.mu.Lock()
			if !st.closed && !st.rstRecv {
				s.appendControl(typeWindowUpdate, flagACK, st.id, 0)
			}
			st.mu.Unlock()
			return st, nil
		}
		s.mu.Unlock()
		select {
		case <-s.acceptWake:
		case <-s.done:
		}
	}
}

// acked notes that the peer has answered (ACK or RST) a stream opened
// here, or that this side has given up on it.
func (s *Session) acked() {
	s.mu.Lock()
	s.unacked--
	if s.openWaiting > 0 {
		wake(s.openWake)
	}
	s.mu.Unlock()
}

// forget removes a stream from the table: what the peer still sends on
// it is skipped.
func (s *Session) forget(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

// NumStreams reports the streams in the table: opened or accepted, not
// closed here nor reset by the peer.
func (s *Session) NumStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// Ping sends a ping; its answer measures the round-trip time (RTT). It
// does not wait.
func (s *Session) Ping() {
	s.mu.Lock()
	s.pingID++
	s.pingSent = max(s.now(), 1)
	s.appendControl(typePing, flagSYN, 0, s.pingID)
	s.mu.Unlock()
}

// pong takes the answer to a ping.
func (s *Session) pong(id uint32) {
	s.mu.Lock()
	if id == s.pingID && s.pingSent != 0 {
		s.rtt.Store(max(s.now()-s.pingSent, 1))
		s.pingSent = 0
	}
	s.mu.Unlock()
}

// RTT reports the last round-trip time measured by a ping, or zero.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// LastRead reports when the connection last gave bytes (the session's
// start, before that).
func (s *Session) LastRead() time.Time {
	return s.epoch.Add(time.Duration(s.lastRead.Load()))
}

// FramesQueued counts the frames queued to be written so far: once the
// peer's FramesHandled reaches it, the peer has handled them all.
func (s *Session) FramesQueued() uint64 { return s.queued.Load() }

// FramesHandled counts the peer's frames handled so far: their effects
// (bytes buffered, streams told) are visible.
func (s *Session) FramesHandled() uint64 { return s.handled.Load() }

// Spoke is closed once the first of the peer's frames has been handled.
func (s *Session) Spoke() <-chan struct{} { return s.spoke }

// Reserved reports the window growth reserved from the receive budget.
func (s *Session) Reserved() int64 { return s.budget.used() }

// Done is closed when the session has ended, for any reason.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err reports why the session ended: ErrClosed if it was closed here, an
// error wrapping ErrProtocol, ErrGoneAway, the connection's error or the
// cause given to Abort. It is nil while the session runs.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *Session) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Abort ends the session for cause (nil: ErrClosed), without waiting for
// its goroutines (Close still does).
func (s *Session) Abort(cause error) {
	if cause == nil {
		cause = ErrClosed
	}
	s.fail(cause)
}

// Close ends the session and every stream, and returns once the
// session's goroutines have ended. It is idempotent. It must not be
// called from a NotifyRead function.
func (s *Session) Close() error {
	s.fail(ErrClosed)
	s.wg.Wait()
	return nil
}

// fail ends the session; the first cause stays.
func (s *Session) fail(cause error) {
	first := false
	s.endOnce.Do(func() {
		first = true
		s.err = cause
		s.streamErr = cause
		if !errors.Is(cause, ErrClosed) {
			s.streamErr = fmt.Errorf("%w: %w", ErrClosed, cause)
		}
		close(s.done)
	})
	if !first {
		return
	}
	if c, ok := s.conn.(CloserFor); ok {
		c.CloseFor(cause)
	} else {
		s.conn.Close()
	}
	s.w.mu.Lock()
	select {
	case <-s.w.goAway:
	default:
		close(s.w.goAway)
	}
	s.w.mu.Unlock()
	s.mu.Lock()
	sts := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		sts = append(sts, st)
	}
	s.accepts = nil
	s.mu.Unlock()
	for _, st := range sts {
		st.sessionEnded()
	}
}

// CloserFor is a connection that is closed with the session's error, the
// cause of its end (the tunnel's closes beneath TLS, with no goodbye, if
// the peer was at fault).
type CloserFor interface {
	CloseFor(cause error) error
}

// wake signals a cap-1 channel without waiting.
func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
