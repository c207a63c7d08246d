// Package route is the edge's matching, pure and without I/O: host names
// (HTTP Host, TLS SNI, exact or wildcard) to services with Names, and
// services to the tunnels that offer them with Table. The edge adds a
// tunnel to a Table when its handshake succeeds, removes it when it ends,
// and picks one for each client connection.
package route

import (
	"slices"
	"sort"
	"sync"
)

// Table maps service names to the tunnels (of type T) that offer them.
// Several tunnels may offer one service: one connector's pool of tunnels,
// or replicas on several connectors. The zero value is an empty table ready
// for use; a Table is safe for concurrent use.
type Table[T comparable] struct {
	state struct {
		sync.Mutex
		// offers maps a service to its tunnels, in the order they arrived.
		offers map[string][]T
		// next is the round-robin position for each service.
		next map[string]uint32
	}
}

// Add records that tunnel t offers services.
func (tb *Table[T]) Add(t T, services []string) {
	tb.state.Lock()
	defer tb.state.Unlock()
	if tb.state.offers == nil {
		tb.state.offers = make(map[string][]T)
		tb.state.next = make(map[string]uint32)
	}
	for _, s := range services {
		if !slices.Contains(tb.state.offers[s], t) {
			tb.state.offers[s] = append(tb.state.offers[s], t)
		}
	}
}

// Set makes tunnel t offer exactly services: it is added where it was
// missing and removed from every other service. It returns the services
// added and those removed, sorted.
func (tb *Table[T]) Set(t T, services []string) (added, removed []string) {
	tb.state.Lock()
	defer tb.state.Unlock()
	if tb.state.offers == nil {
		tb.state.offers = make(map[string][]T)
		tb.state.next = make(map[string]uint32)
	}
	for s, ts := range tb.state.offers {
		if i := slices.Index(ts, t); i >= 0 && !slices.Contains(services, s) {
			tb.removeAt(s, i)
			removed = append(removed, s)
		}
	}
	for _, s := range services {
		if !slices.Contains(tb.state.offers[s], t) {
			tb.state.offers[s] = append(tb.state.offers[s], t)
			added = append(added, s)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

// removeAt removes the tunnel at index i of service s; the state is locked.
func (tb *Table[T]) removeAt(s string, i int) {
	ts := slices.Delete(tb.state.offers[s], i, i+1)
	if len(ts) == 0 {
		delete(tb.state.offers, s)
		delete(tb.state.next, s)
	} else {
		tb.state.offers[s] = ts
	}
}

// Remove forgets tunnel t for every service; it reports whether t was there.
func (tb *Table[T]) Remove(t T) bool {
	tb.state.Lock()
	defer tb.state.Unlock()
	found := false
	for s, ts := range tb.state.offers {
		i := slices.Index(ts, t)
		if i < 0 {
			continue
		}
		found = true
		tb.removeAt(s, i)
	}
	return found
}

// Pick returns a tunnel offering service, spreading successive picks over
// all of them, and false if none does.
func (tb *Table[T]) Pick(service string) (T, bool) {
	tb.state.Lock()
	defer tb.state.Unlock()
	ts := tb.state.offers[service]
	if len(ts) == 0 {
		var zero T
		return zero, false
	}
	n := tb.state.next[service]
	tb.state.next[service] = n + 1
	return ts[int(n%uint32(len(ts)))], true
}

// Count returns how many tunnels offer each service, services sorted.
func (tb *Table[T]) Count() []ServiceCount {
	tb.state.Lock()
	defer tb.state.Unlock()
	out := make([]ServiceCount, 0, len(tb.state.offers))
	for s, ts := range tb.state.offers {
		out = append(out, ServiceCount{Service: s, Tunnels: len(ts)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// ServiceCount is one row of Count.
type ServiceCount struct {
	Service string `json:"service"`
	Tunnels int    `json:"tunnels"`
}
