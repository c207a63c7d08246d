package pipe

import (
	"net"
	"sync"
	"time"
)

// Tracker keeps live connections, so that a drain can wait for them and
// then close what is left. The zero value is ready for use; a Tracker is
// safe for concurrent use.
type Tracker struct {
	// mu guards conns and wg's Add.
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Add starts tracking c.
func (t *Tracker) Add(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
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
// ones left as cut off (Abort) and returns how many there were.
func (t *Tracker) Wait(timeout time.Duration) int {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-time.After(timeout):
	}
	// Abort outside the lock: an exchange that ends calls Done.
	t.mu.Lock()
	left := make([]net.Conn, 0, len(t.conns))
	for c := range t.conns {
		left = append(left, c)
	}
	t.mu.Unlock()
	for _, c := range left {
		Abort(c)
	}
	<-done
	return len(left)
}
