// Package slowdown answers failed attempts from one address ever later,
// so that secrets (SOCKS passwords, session links, join tokens) cannot be
// tried at the speed of the network, while other addresses are not
// slowed:
//
//	var fails slowdown.Failures
//	if !ok {
//		time.Sleep(fails.Failed(ip, time.Now())) // within the handshake's deadline
//		refuse()
//	}
//	fails.Succeeded(ip)
package slowdown

import (
	"net/netip"
	"sync"
	"time"
)

// The n-th failure in a row from one address waits min(First·2^(n-1),
// Max); a success, or Reset without a failure, forgets the address. At
// most MaxSources addresses are remembered.
const (
	First      = 100 * time.Millisecond
	Max        = 5 * time.Second
	Reset      = time.Minute
	MaxSources = 10000
)

// Failures counts failures by address. The zero value is ready; it is
// safe for concurrent use.
type Failures struct {
	mu    sync.Mutex
	fails map[netip.Addr]failures
}

type failures struct {
	n    int
	last time.Time
}

// Failed records a failure from ip at now and returns how long to wait
// before answering it; nothing for an unknown address (the zero Addr).
func (b *Failures) Failed(ip netip.Addr, now time.Time) time.Duration {
	if !ip.IsValid() {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fails == nil {
		b.fails = make(map[netip.Addr]failures)
	}
	f, ok := b.fails[ip]
	if ok && now.Sub(f.last) >= Reset {
		f = failures{}
	}
	if !ok && len(b.fails) >= MaxSources {
		for k, v := range b.fails {
			if now.Sub(v.last) >= Reset {
				delete(b.fails, k)
			}
		}
	}
	f.n++
	f.last = now
	if ok || len(b.fails) < MaxSources {
		b.fails[ip] = f
	}
	return delay(f.n)
}

// delay is the wait after n failures in a row.
func delay(n int) time.Duration {
	d := First
	for i := 1; i < n && d < Max; i++ {
		d *= 2
	}
	return min(d, Max)
}

// Wait is how much longer ip must wait, at now, for the wait its last
// failure earned to be over: for callers that refuse at once while it
// lasts rather than hold the connection (a sleeping connection would
// hold a socket and a goroutine per attempt).
func (b *Failures) Wait(ip netip.Addr, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, ok := b.fails[ip]
	if !ok {
		return 0
	}
	return max(f.last.Add(delay(f.n)).Sub(now), 0)
}

// Succeeded forgets ip's failures.
func (b *Failures) Succeeded(ip netip.Addr) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.fails, ip)
}
