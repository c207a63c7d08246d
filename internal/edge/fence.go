package edge

import (
	"context"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/wire"
)

// The freshness fence (docs/cluster.md §5): every fenceTick the edge
// renews its presence and checks that its connectors watch has delivered
// what the store held a tick earlier. If neither has succeeded for
// fenceAfter, the edge can no longer learn of a revocation in time: it is
// fenced until a tick succeeds again.
const (
	fenceTick  = 500 * time.Millisecond
	fenceAfter = 1500 * time.Millisecond
	// fenceCallTimeout bounds each store call of a tick, so that a tick
	// ends within fenceTick even when the store does not answer.
	fenceCallTimeout = 450 * time.Millisecond
)

// FencedReason is what a fenced edge tells connectors and logs for
// clients it turns away.
const FencedReason = "this edge has lost its store; try another edge"

// fence is the edge's freshness state. Its zero value is not fenced.
type fence struct {
	mu sync.Mutex
	// fenced is set while the edge cannot trust its view of the store.
	fenced bool
	// lastFresh is when a tick last succeeded (or the store opened).
	lastFresh time.Time
}

// Fenced reports whether the edge is fenced: it cannot reach its store,
// so it refuses hellos, enrollments, renewals and session uses, routes no
// new client and holds no tunnel. Readiness should fail while it is.
func (e *Edge) Fenced() bool {
	e.fence.mu.Lock()
	defer e.fence.mu.Unlock()
	return e.fence.fenced
}

// fenceTicks renews the edge's presence and checks the connectors watch
// every fenceTick until ctx ends, fencing and unfencing the edge.
// presence writes the edge's presence record.
func (e *Edge) fenceTicks(ctx context.Context, presence func() error) {
	e.fence.mu.Lock()
	e.fence.lastFresh = e.now()
	e.fence.mu.Unlock()
	t := time.NewTicker(fenceTick)
	defer t.Stop()
	var lastSeq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fresh := e.tick(ctx, presence, &lastSeq)
		e.freshness(fresh, e.now())
	}
}

// tick runs one round of the fence's two checks at once and reports
// whether either succeeded: the presence write (it needs the store's
// leader), or the connectors bucket's last sequence read with the watch
// caught up to the one read a tick earlier. Either alone is enough, so
// that one bucket's leader election does not fence the edge (§7).
func (e *Edge) tick(ctx context.Context, presence func() error, lastSeq *uint64) bool {
	tctx, cancel := context.WithTimeout(ctx, fenceCallTimeout)
	defer cancel()
	put := make(chan error, 1)
	go func() { put <- presence() }()
	prev := *lastSeq
	last, caughtUp, err := e.st.ConnectorsCaughtUp(tctx, prev)
	if err == nil {
		*lastSeq = last
	}
	putErr := <-put
	return putErr == nil || (err == nil && caughtUp)
}

// freshness applies one tick's outcome at now: a fresh tick unfences;
// fenceAfter without one fences, once, and closes the tunnels.
func (e *Edge) freshness(fresh bool, now time.Time) {
	e.fence.mu.Lock()
	was := e.fence.fenced
	switch {
	case fresh:
		e.fence.lastFresh = now
		e.fence.fenced = false
	case now.Sub(e.fence.lastFresh) >= fenceAfter:
		e.fence.fenced = true
	}
	is, since := e.fence.fenced, now.Sub(e.fence.lastFresh)
	e.fence.mu.Unlock()
	switch {
	case is && !was:
		e.log.Error("edge fenced: the store has not answered; refusing tunnels, enrollments, renewals, sessions and new clients, and closing the tunnels until it does",
			"store_silent_for", since.Round(time.Millisecond).String())
		e.closeTunnels()
	case was && !is:
		e.log.Info("edge unfenced: the store answers again; serving")
	}
}

// fencedRefusal is the refusal a fenced edge gives a connector's opening
// (hello, enrollment, renewal); nil when the edge is not fenced.
func (e *Edge) fencedRefusal() *wire.Refusal {
	if !e.Fenced() {
		return nil
	}
	return &wire.Refusal{Code: wire.CodeInternal, Reason: FencedReason}
}

// fencedClient refuses client c (for service, if named) while the edge is
// fenced; nil when it is not.
func (e *Edge) fencedClient(service string, c admission.Client) *admission.Refusal {
	if !e.Fenced() {
		return nil
	}
	return e.Refused(admission.Refuse(admission.ReasonStoreLost, service, "%s", FencedReason), c)
}
