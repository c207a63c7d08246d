package pipe

import (
	"maps"
	"net"
	"sync"
	"time"
)

// Tracker keeps live connections, so that a drain can wait for them and
// then close what is left. The zero value is ready for use; a Tracker is
// safe for concurrent use.
type Tracker struct {
	// live guards the tracked connections, each mapped to the exchange it
	// was attached to, or nil. wg counts them: its Add and Done are made
	// under live's lock, as conns changes.
	live struct {
		sync.Mutex
		conns map[net.Conn]*Exchange
	}
	wg sync.WaitGroup
}

// Add starts tracking c.
func (t *Tracker) Add(c net.Conn) {
	t.live.Lock()
	defer t.live.Unlock()
	if t.live.conns == nil {
		t.live.conns = make(map[net.Conn]*Exchange)
	}
	t.live.conns[c] = nil
	t.wg.Add(1)
}

// Attach records that c, if still tracked, is in exchange x: a drain that
// times out aborts x rather than closing c alone.
func (t *Tracker) Attach(c net.Conn, x *Exchange) {
	t.live.Lock()
	defer t.live.Unlock()
	if _, ok := t.live.conns[c]; ok {
		t.live.conns[c] = x
	}
}

// Done stops tracking c; it is safe to call more than once.
func (t *Tracker) Done(c net.Conn) {
	t.live.Lock()
	defer t.live.Unlock()
	if _, ok := t.live.conns[c]; ok {
		delete(t.live.conns, c)
		t.wg.Done()
	}
}

// Wait waits up to timeout for every connection to finish, then ends the
// ones left as cut off (their exchange's Abort, or Close) and returns how
// many there were.
func (t *Tracker) Wait(timeout time.Duration) int {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-time.After(timeout):
	}
	// End them outside the lock: an exchange that ends calls Done.
	t.live.Lock()
	left := make(map[net.Conn]*Exchange, len(t.live.conns))
	maps.Copy(left, t.live.conns)
	t.live.Unlock()
	for c, x := range left {
		if x != nil {
			x.Abort()
		}
		c.Close()
	}
	<-done
	return len(left)
}
