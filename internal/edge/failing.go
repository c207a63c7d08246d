package edge

import (
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/tunnel"
)

// A replica (one of several connectors granted a service) whose back-end
// is down refuses each stream at once, so it holds no streams and would
// be the least loaded of all: every other client would be sent to it.
// The edge remembers, for failHold, the tunnels whose connector refused a
// stream to a service for want of its back-end, and picks them only when
// every live tunnel of the service is failing (route.Load.Failing). It is
// the data path's own judgement, no health check: once the hold is over,
// a new client tries the replica again.
const (
	failHold = 5 * time.Second
	// maxFailing bounds the marks kept; past it, the expired ones go.
	maxFailing = 4096
)

type failKey struct {
	sess    *tunnel.Session
	service string
}

// failing is the marks, by tunnel and service. It is safe for concurrent
// use; its lock is never held while the route table's is taken (Pick
// calls is under the table's lock).
type failing struct {
	mu    sync.Mutex
	until map[failKey]time.Time
}

// mark notes at now that sess's connector could not reach service's
// back-end.
func (f *failing) mark(sess *tunnel.Session, service string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.until == nil {
		f.until = make(map[failKey]time.Time)
	}
	if len(f.until) >= maxFailing {
		for k, t := range f.until {
			if !now.Before(t) {
				delete(f.until, k)
			}
		}
		if len(f.until) >= maxFailing {
			return // every mark is fresh: this one waits for the next failure
		}
	}
	f.until[failKey{sess, service}] = now.Add(failHold)
}

// is reports whether sess is failing for service at now.
func (f *failing) is(sess *tunnel.Session, service string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := failKey{sess, service}
	t, ok := f.until[k]
	if ok && !now.Before(t) {
		delete(f.until, k)
		return false
	}
	return ok
}
