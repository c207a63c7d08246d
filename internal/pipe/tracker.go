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
	// mu guards conns and wg's Add. A connection maps to the exchange it
	// was attached to, or nil.
	mu    sync.Mutex
	conns map[net.Conn]*Exchange
	wg    sync.WaitGroup
}

// Add starts tracking c.
func (t *Tracker) Add(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = make(map[net.Conn]*Exchange)
	}
	t.conns[c] = nil
	t.wg.Add(1)
}

// Attach records that c, if still tracked, is in exchange x: a drain that
// times out aborts x rather than closing c alone.
func (t *Tracker) Attach(c net.Conn, x *Exchange) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.conns[c]; ok {
		t.conns[c] = x
	}
}

// Done stops tracking c; it is safe to call more than once.
func (t *Tracker) Done(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.conns[c]; ok {
		delete(t.conns, c)
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
	t.mu.Lock()
	left := make(map[net.Conn]*Exchange, len(t.conns))
	maps.Copy(left, t.conns)
	t.mu.Unlock()
	for c, x := range left {
		if x != nil {
			x.Abort()
		}
		c.Close()
	}
	<-done
	return len(left)
}
