package admission

import (
	"sync"
	"time"
)

// Recorded is one refusal as the dashboard lists it.
type Recorded struct {
	Time    time.Time
	Reason  Reason
	Service string // empty when the refusal came before a service was known
	Client  string // the client's address; empty when unknown
	Via     string // the listener kind, as in Client.Via
	Msg     string // what the client was told, or the log's words
}

// Recent keeps the last refusals in a ring of fixed size, so that a flood
// of refusals costs no more memory than a quiet day. The zero value keeps
// none; make one with NewRecent. It is safe for concurrent use.
type Recent struct {
	ring struct {
		sync.Mutex
		buf  []Recorded // len is the ring's size
		next int        // where the next refusal goes
		n    int        // how many are kept, at most len(buf)
	}
}

// NewRecent returns a ring that keeps the last size refusals.
func NewRecent(size int) *Recent {
	r := &Recent{}
	r.ring.buf = make([]Recorded, size)
	return r
}

// Add keeps rec, pushing out the oldest if the ring is full.
func (r *Recent) Add(rec Recorded) {
	r.ring.Lock()
	defer r.ring.Unlock()
	if len(r.ring.buf) == 0 {
		return
	}
	r.ring.buf[r.ring.next] = rec
	r.ring.next = (r.ring.next + 1) % len(r.ring.buf)
	r.ring.n = min(r.ring.n+1, len(r.ring.buf))
}

// List returns the refusals kept, newest first.
func (r *Recent) List() []Recorded {
	r.ring.Lock()
	defer r.ring.Unlock()
	out := make([]Recorded, 0, r.ring.n)
	for i := 1; i <= r.ring.n; i++ {
		out = append(out, r.ring.buf[(r.ring.next-i+len(r.ring.buf))%len(r.ring.buf)])
	}
	return out
}
