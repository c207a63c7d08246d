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
		// of maps each tunnel to the services it offers, so that a
		// tunnel's changes cost its own services, not every service's.
		of map[T][]string
		// group maps a tunnel to its group (its connector); see Group.
		group map[T]string
		// loads is Pick's scratch space, reused.
		loads []weighed
	}
}

// weighed is a tunnel's load as Pick sees it.
type weighed struct {
	Load
	group string
	// groupStreams is the streams on every tunnel of the group that
	// offers the service (the tunnel's own if it has no group).
	groupStreams int
}

// init makes the maps of an empty table; the state is locked.
func (tb *Table[T]) init() {
	if tb.state.offers == nil {
		tb.state.offers = make(map[string][]T)
		tb.state.next = make(map[string]uint32)
		tb.state.of = make(map[T][]string)
		tb.state.group = make(map[T]string)
	}
}

// Group puts tunnel t in group g: the tunnels of one connector (its pool)
// are one replica, and Pick weighs a replica by the streams on all of its
// tunnels before it weighs the tunnel's own. "" (the default) puts t in
// a group of its own. Remove forgets it.
func (tb *Table[T]) Group(t T, g string) {
	tb.state.Lock()
	defer tb.state.Unlock()
	tb.init()
	if g == "" {
		delete(tb.state.group, t)
	} else {
		tb.state.group[t] = g
	}
}

// addLocked records that t offers s, unless it does already; the state
// is locked.
func (tb *Table[T]) addLocked(t T, s string) bool {
	if slices.Contains(tb.state.of[t], s) {
		return false
	}
	tb.state.offers[s] = append(tb.state.offers[s], t)
	tb.state.of[t] = append(tb.state.of[t], s)
	return true
}

// Add records that tunnel t offers services.
func (tb *Table[T]) Add(t T, services []string) {
	tb.state.Lock()
	defer tb.state.Unlock()
	tb.init()
	for _, s := range services {
		tb.addLocked(t, s)
	}
}

// Set makes tunnel t offer exactly services: it is added where it was
// missing and removed from every other service. It returns the services
// added and those removed, sorted.
func (tb *Table[T]) Set(t T, services []string) (added, removed []string) {
	tb.state.Lock()
	defer tb.state.Unlock()
	tb.init()
	for _, s := range slices.Clone(tb.state.of[t]) {
		if !slices.Contains(services, s) {
			tb.removeLocked(t, s)
			removed = append(removed, s)
		}
	}
	for _, s := range services {
		if tb.addLocked(t, s) {
			added = append(added, s)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

// removeLocked removes tunnel t from service s, which it offers; the
// state is locked.
func (tb *Table[T]) removeLocked(t T, s string) {
	if ts := without(tb.state.offers[s], t); len(ts) > 0 {
		tb.state.offers[s] = ts
	} else {
		delete(tb.state.offers, s)
		delete(tb.state.next, s)
	}
	if of := without(tb.state.of[t], s); len(of) > 0 {
		tb.state.of[t] = of
	} else {
		delete(tb.state.of, t)
	}
}

// without removes v from xs, where it is once.
func without[E comparable](xs []E, v E) []E {
	i := slices.Index(xs, v)
	return slices.Delete(xs, i, i+1)
}

// Remove forgets tunnel t for every service; it reports whether t was there.
func (tb *Table[T]) Remove(t T) bool {
	tb.state.Lock()
	defer tb.state.Unlock()
	services := slices.Clone(tb.state.of[t])
	for _, s := range services {
		tb.removeLocked(t, s)
	}
	delete(tb.state.group, t)
	return len(services) > 0
}

// Load is what Pick weighs a tunnel by, as the caller sees it from its
// own data path: no shared state and no health check of its own.
type Load struct {
	// Streams is the number of streams open on the tunnel now.
	Streams int
	// Stale is set when the tunnel has not been heard from lately (its
	// keepalive is overdue): it may be dead without having failed yet.
	Stale bool
	// Failing is set when the tunnel's connector refused a stream to the
	// service lately because it could not reach the back-end: a replica
	// whose back-end is down answers at once, has no streams, and would
	// otherwise be the least loaded of all.
	Failing bool
}

// Pick returns a tunnel offering service, and false if none does. With a
// nil load it spreads successive picks round-robin over all of them.
// Otherwise it picks the least loaded: a tunnel heard from lately before
// a stale one, then the one whose group (its connector: a replica, see
// Group) has the fewest open streams on its tunnels offering service,
// then the one with the fewest itself; ties go round-robin, so that
// replicas at rest share new streams evenly. A stale tunnel is picked
// only when every tunnel is stale: it may still work, and a refusal
// surely does not; a failing one (Load.Failing) only when every live
// tunnel is failing. load is called under the table's lock, once per tunnel
// offering service: it must be quick and must not call the table.
func (tb *Table[T]) Pick(service string, load func(T) Load) (T, bool) {
	tb.state.Lock()
	defer tb.state.Unlock()
	ts := tb.state.offers[service]
	if len(ts) == 0 {
		var zero T
		return zero, false
	}
	start := int(tb.state.next[service] % uint32(len(ts)))
	best := start
	if load != nil {
		ws := tb.weigh(ts, load)
		for i := 1; i < len(ts); i++ {
			if j := (start + i) % len(ts); less(ws[j], ws[best]) {
				best = j
			}
		}
	}
	tb.state.next[service] = uint32(best + 1)
	return ts[best], true
}

// weigh returns the load of each of ts, with its group's streams; the
// state is locked. The slice is the table's scratch space, so a pick
// allocates nothing (a service with more than smallGroups tunnels sums
// through a map).
func (tb *Table[T]) weigh(ts []T, load func(T) Load) []weighed {
	ws := tb.state.loads[:0]
	for _, t := range ts {
		ws = append(ws, weighed{Load: load(t), group: tb.state.group[t]})
	}
	tb.state.loads = ws
	var sums map[string]int
	if len(ws) > smallGroups {
		sums = make(map[string]int)
		for _, w := range ws {
			sums[w.group] += w.Streams
		}
	}
	// A replica whose back-end is down fails on every tunnel: one
	// tunnel's failure marks its group's.
	for i := range ws {
		if ws[i].Failing && ws[i].group != "" {
			for j := range ws {
				if ws[j].group == ws[i].group {
					ws[j].Failing = true
				}
			}
		}
	}
	for i := range ws {
		switch {
		case ws[i].group == "":
			ws[i].groupStreams = ws[i].Streams
		case sums != nil:
			ws[i].groupStreams = sums[ws[i].group]
		default:
			for _, w := range ws {
				if w.group == ws[i].group {
					ws[i].groupStreams += w.Streams
				}
			}
		}
	}
	return ws
}

// smallGroups is the most tunnels of one service whose group loads Pick
// sums pair by pair.
const smallGroups = 16

// less reports whether a tunnel weighed a is a better pick than one
// weighed b.
func less(a, b weighed) bool {
	if a.Stale != b.Stale {
		return !a.Stale
	}
	if a.Failing != b.Failing {
		return !a.Failing
	}
	if a.groupStreams != b.groupStreams {
		return a.groupStreams < b.groupStreams
	}
	return a.Streams < b.Streams
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
