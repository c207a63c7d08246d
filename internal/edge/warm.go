package edge

import (
	"errors"
	"slices"
	"time"
)

// A cluster edge that has just started holds few tunnels: its connectors
// come back over their join spread (30 s by default). A balancer that
// sent it clients at once would have them refused for want of a route,
// so /readyz says "starting" until the edge holds tunnels from
// warmShare of the connectors that the median other live edge holds
// (docs/cluster.md §7), or warmupMax has passed: connectors that never
// come (granted nothing, or K edges of many) must not keep it out.
const (
	warmShare = 0.9
	warmupMax = time.Minute
)

var errWarming = errors.New("starting: waiting for the connectors' tunnels")

// warmedUp reports whether the edge has warmed up; once it has, it stays
// so (a connector that leaves later must not make the balancer drop the
// edge).
func (e *Edge) warmedUp() bool {
	if e.warm.Load() {
		return true
	}
	held := e.connectorsHeld()
	median, others := e.othersHeld()
	since := e.now().Sub(e.members.started)
	if float64(held) < warmShare*float64(median) && since < warmupMax {
		return false
	}
	if e.warm.CompareAndSwap(false, true) && others > 0 {
		e.log.Info("warmed up: ready for clients", "connectors", held, "median_of_other_edges", median,
			"other_edges", others, "after", since.Round(time.Millisecond).String())
	}
	return true
}

// connectorsHeld is how many connectors have a tunnel to this edge.
func (e *Edge) connectorsHeld() int {
	e.conns.Lock()
	defer e.conns.Unlock()
	return len(e.conns.byID)
}

// othersHeld is the median of the connector counts that the other live
// edges, not draining, last wrote in their presence, and how many edges
// that is; 0, 0 when there are none.
func (e *Edge) othersHeld() (median, edges int) {
	e.members.mu.Lock()
	counts := make([]int, 0, len(e.members.live))
	for _, p := range e.members.live {
		if !p.Draining {
			counts = append(counts, p.Connectors)
		}
	}
	e.members.mu.Unlock()
	if len(counts) == 0 {
		return 0, 0
	}
	slices.Sort(counts)
	return counts[len(counts)/2], len(counts)
}
