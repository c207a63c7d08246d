package mux

import (
	"sync"
	"time"
)

// Receive flow control and the session's receive budget.
//
// Each stream's receive window W starts at InitialWindow. The peer holds
// credit: what it may still send. A Read gives credit back (a window
// update, queued under the stream's lock, so credit is never given
// without its update) once at least half of W is free: credit plus
// buffered bytes at most W/2; the update tops the credit up to W.
//
// Growth, as TCP's autotuning: when the reader took half a window within
// growRTTs round trips of the last update (RTT from the session's pings),
// the link could carry more than W per round trip, and W doubles, up to
// MaxWindow. Each growth is reserved from the session's budget first; a
// refusal keeps W as it is (no stream waits for another) and asks for a
// sweep.
//
// Shrinking: a stream whose reader has taken everything and that has
// received nothing for Config.IdleShrink goes back to InitialWindow (the
// session's reader sweeps the streams at most twice per IdleShrink, and
// when a growth was refused). Credit already given cannot be taken back,
// so a stream's reservation always covers its commitment above the
// initial window, max(W, credit + buffered) - InitialWindow, and is given
// back as the commitment falls (trim). So the bytes a peer can make the
// session hold never exceed the budget plus InitialWindow per stream.

// growRTTs is how many round trips a reader may take over half a window
// for the window to grow.
const growRTTs = 4

// budget is a session's receive budget. Its methods are safe for
// concurrent use.
type budget struct {
	limit int64

	// mu guards reserved.
	mu       sync.Mutex
	reserved int64
}

// reserve takes n bytes from the budget, if it has them.
func (b *budget) reserve(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.reserved+n > b.limit {
		return false
	}
	b.reserved += n
	return true
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.reserved -= n
	b.mu.Unlock()
}

func (b *budget) used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reserved
}

// creditBack gives the peer credit back after a Read, growing the window
// first if the reader keeps up. The caller holds st.mu.
func (st *Stream) creditBack() {
	s := st.sess
	buffered := int64(st.buf.n)
	if st.finRecv || st.rstRecv || st.closed || st.ended || st.credit+buffered > st.win/2 {
		st.trim()
		return
	}
	now := s.now()
	if rtt := s.rtt.Load(); rtt > 0 && st.win < MaxWindow && st.lastUpdate != 0 && now-st.lastUpdate < growRTTs*rtt {
		grown := min(2*st.win, MaxWindow)
		if need := grown - InitialWindow - st.res; need <= 0 || s.budget.reserve(need) {
			st.res += max(need, 0)
			st.win = grown
		} else {
			s.sweep.Store(true)
		}
	}
	st.lastUpdate = now
	delta := st.win - st.credit - buffered
	st.credit += delta
	s.appendControl(typeWindowUpdate, 0, st.id, uint32(delta))
	st.trim()
}

// trim gives back the part of the stream's reservation above its
// commitment. The caller holds st.mu.
func (st *Stream) trim() {
	need := int64(0)
	switch {
	case st.closed:
	case st.finRecv:
		// Nothing more comes: only what is buffered counts.
		need = int64(st.buf.n) - InitialWindow
	case !st.ended && !st.rstRecv:
		need = max(st.win, st.credit+int64(st.buf.n)) - InitialWindow
	}
	need = max(need, 0)
	if st.res > need {
		st.sess.budget.release(st.res - need)
		st.res = need
	}
}

// shrink takes an idle stream's window back to InitialWindow. The caller
// holds st.mu.
func (st *Stream) shrink(now int64, idle time.Duration) {
	if st.win > InitialWindow && st.buf.n == 0 && now-st.lastRecv >= int64(idle) {
		st.win = InitialWindow
		st.trim()
	}
}

// maybeSweep shrinks the idle streams' windows, when a growth was
// refused or IdleShrink/2 has passed since the last sweep, and some
// window has grown. It is called by the session's reader.
func (s *Session) maybeSweep() {
	now := s.now()
	if !s.sweep.Load() && now-s.lastSweep < int64(s.cfg.IdleShrink/2) {
		return
	}
	s.lastSweep = now
	s.sweep.Store(false)
	if s.budget.used() == 0 {
		return
	}
	s.Sweep()
}

// Sweep takes the window of every stream idle for Config.IdleShrink back
// to InitialWindow. The session's reader calls it on its own; a caller
// may call it too (a test, a ticker).
func (s *Session) Sweep() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		st.mu.Lock()
		st.shrink(now, s.cfg.IdleShrink)
		st.mu.Unlock()
	}
}
