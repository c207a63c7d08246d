package tunnel

import (
	"errors"
	"sync"

	yamux "github.com/libp2p/go-yamux/v5"
)

// A session's receive budget.
//
// Each stream starts with the protocol's 256 KiB receive window
// (InitialWindow): what the peer may send it before its reader takes
// anything. go-yamux grows a stream's window, doubling it up to
// MaxWindow, when its reader takes half of it within four round trips of
// the last update, as TCP grows its window with the bandwidth-delay
// product; a window never shrinks while the stream lives. Every growth
// asks the session's budget first (go-yamux's MemoryManager, one span per
// stream), and a refusal only keeps the window as it is: the stream goes
// on at its present window, and no other stream waits for it. So the
// bytes the peer can make this side hold are at most the budget plus
// InitialWindow per stream, however many streams stop reading, while a
// stream whose window has grown keeps it.
//
// A stream's opening reserves its initial window too, at go-yamux's
// highest priority; the budget grants that always (and counts it in
// reserved): go-yamux v5.1.0 ends the whole session when an incoming
// stream's reservation fails, and loses an accept-backlog slot for good
// when an outgoing one's does.

// DefaultReceiveBudget is Config.ReceiveBudget's default: room for four
// streams at their largest window (MaxWindow, enough for 1 Gbit/s at
// 130 ms), or eight at the window a 1 Gbit/s, 50 ms link needs.
const DefaultReceiveBudget = 64 << 20

// openPriority is the priority of go-yamux's reservation for a stream's
// initial window; its window growth asks with a lower one.
const openPriority = 255

// errOverBudget refuses a window growth.
var errOverBudget = errors.New("tunnel receive budget exhausted")

// budget is a session's receive budget. Its methods are safe for
// concurrent use.
type budget struct {
	limit int64

	// mu guards grown and initial.
	mu sync.Mutex
	// grown is the window growth reserved by the streams, at most limit;
	// initial the initial windows of the streams.
	grown, initial int64
}

func newBudget(limit int64) *budget { return &budget{limit: limit} }

// span starts the reservations of one stream (go-yamux's
// newMemoryManager).
func (b *budget) span() (yamux.MemoryManager, error) { return &span{b: b}, nil }

// reserved reports the window growth and the initial windows reserved.
func (b *budget) reserved() (grown, initial int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.grown, b.initial
}

// span is one stream's part of a budget.
type span struct {
	b *budget
	// Guarded by b.mu.
	grown, initial int64
	done           bool
}

func (s *span) ReserveMemory(size int, prio uint8) error {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case s.done:
		// A read of a finished stream's last bytes may still ask.
		return errOverBudget
	case prio >= openPriority:
		s.initial += int64(size)
		b.initial += int64(size)
	case b.grown+int64(size) > b.limit:
		return errOverBudget
	default:
		s.grown += int64(size)
		b.grown += int64(size)
	}
	return nil
}

func (s *span) ReleaseMemory(size int) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(int64(size), s.grown)
	s.grown -= n
	b.grown -= n
}

// Done gives back everything the stream reserved; go-yamux calls it once
// the stream is gone (and may call it twice).
func (s *span) Done() {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.grown -= s.grown
	b.initial -= s.initial
	s.grown, s.initial, s.done = 0, 0, true
}
