package edge

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// A connector renews its certificate at two thirds of its lifetime, and
// again after a failure; one that renews over and over (a bug, or a stolen
// certificate put to work) would make the edge sign and write the store
// each time. Each identity may renew renewalBurst times at once, then
// once per tenth of a certificate's lifetime, at this edge.
const renewalBurst = 3

// renewals limits renewals per connector identity.
type renewals struct {
	mu    sync.Mutex
	every time.Duration
	by    map[string]*rate.Limiter
}

func newRenewals(certTTL time.Duration) *renewals {
	return &renewals{every: certTTL / 10, by: make(map[string]*rate.Limiter)}
}

// allow reports whether connector id may renew at now, and counts it if
// so. The map holds one small limiter per identity that renewed here:
// only enrolled connectors with a valid certificate get this far.
func (r *renewals) allow(id string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.by[id]
	if l == nil {
		l = rate.NewLimiter(rate.Every(r.every), renewalBurst)
		r.by[id] = l
	}
	return l.AllowN(now, 1)
}

// forget drops a revoked identity's limiter.
func (r *renewals) forget(id string) {
	r.mu.Lock()
	delete(r.by, id)
	r.mu.Unlock()
}
