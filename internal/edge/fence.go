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
// what the store held a round earlier. If neither has succeeded for
// fenceAfter, the edge can no longer learn of a revocation in time: it is
// fenced until a round succeeds again.
const (
	fenceTick  = 500 * time.Millisecond
	fenceAfter = 1500 * time.Millisecond
)

// FencedReason is what a fenced edge tells connectors and logs for
// clients it turns away.
const FencedReason = "this edge has lost its store; try another edge"

// fence is the edge's freshness state. Its zero value is not fenced.
type fence struct {
	mu sync.Mutex
	// fenced is set while the edge cannot trust its view of the store.
	fenced bool
	// lastFresh is when the last successful round started (or the
	// store opened).
	lastFresh time.Time
	// enabled is set when the store is shared with other edges: an
	// embedded store that only this process runs cannot be cut off from
	// it, and fencing it would only turn an overloaded edge into a dead
	// one.
	enabled bool
}

// Fenced reports whether the edge is fenced: it cannot reach its store,
// so it refuses hellos, enrollments, renewals and session uses, routes no
// new client and holds no tunnel. Readiness should fail while it is.
func (e *Edge) Fenced() bool {
	e.fence.mu.Lock()
	defer e.fence.mu.Unlock()
	return e.fence.fenced
}

// round is the outcome of one round of the fence's checks.
type round struct {
	started time.Time
	fresh   bool
	// lastSeq is the connectors bucket's last sequence, if it was read.
	lastSeq uint64
	seqRead bool
}

// fenceTicks renews the edge's presence (with presence) and checks the
// connectors watch in rounds, one at a time, until ctx ends; every
// fenceTick it fences the edge if no round that started in the last
// fenceAfter has succeeded and none that may still succeed is in flight
// (so a revocation is honoured within 2 fenceAfter + fenceTick at worst). A slow store that answers is not a lost one:
// a round may take up to fenceAfter, and a success counts from its start.
func (e *Edge) fenceTicks(ctx context.Context, presence func(context.Context) error) {
	e.fence.mu.Lock()
	e.fence.lastFresh = e.now()
	e.fence.mu.Unlock()
	t := time.NewTicker(fenceTick)
	defer t.Stop()
	var lastSeq uint64
	results := make(chan round, 1)
	inFlight, lastOK := false, true
	var flightStart time.Time
	start := func() {
		inFlight = true
		r, prev := round{started: e.now()}, lastSeq
		flightStart = r.started
		go func() { results <- e.checkRound(ctx, presence, prev, r) }()
	}
	start()
	for {
		select {
		case <-ctx.Done():
			if inFlight {
				<-results // the round's calls end with ctx
			}
			return
		case r := <-results:
			inFlight, lastOK = false, r.fresh
			e.metrics.FenceRound(e.now().Sub(r.started), r.fresh)
			if r.seqRead {
				lastSeq = r.lastSeq
			}
			if r.fresh {
				e.freshness(true, r.started)
			}
		case <-t.C:
			now := e.now()
			if !inFlight {
				start()
			}
			// After a fresh round, the round in flight may be slow (one
			// check waiting out its timeout while the other answers)
			// and its success would count from its start: the edge is
			// not fenced before it has had its fenceAfter. Fencing at
			// every tick after a slow success, and unfencing at the
			// next success, closed every tunnel every two seconds
			// while a lost member's buckets elected leaders. After a
			// failed round the store has had its chance.
			// A round ends by fenceAfter (its checks' timeout); a tick
			// later its answer is in.
			if !(lastOK && now.Sub(flightStart) < fenceAfter+fenceTick) {
				e.freshness(false, now)
			}
		}
	}
}

// checkRound runs the fence's two checks at once, each for at most
// fenceAfter: the presence write (it needs the store's leader), and the
// connectors bucket's last sequence read, with the watch caught up to
// prevSeq, the one read a round earlier. The round is fresh if that read
// shows the watch caught up, or if it failed and the presence write
// succeeded: so one bucket's leader election does not fence the edge
// (§7), but a read that shows the watch behind does, whatever the
// presence write says — the store is there, and this edge is not
// hearing it. If both failed, a cluster member that hears a quorum of
// its cluster is fresh too: the elections after a member's loss took
// about 6 s, and fenced every edge of the majority.
//
// A cluster member that hears no quorum and whose write did not commit
// is cut off, whatever its read says: if its own server leads the
// connectors bucket, the read is answered from what that server holds,
// and NATS's Raft leader steps down only 10 to 20 s after losing its
// quorum. The partitioned edge kept serving for that long when it was
// the leader.
func (e *Edge) checkRound(ctx context.Context, presence func(context.Context) error, prevSeq uint64, r round) round {
	rctx, cancel := context.WithTimeout(ctx, fenceAfter)
	defer cancel()
	put := make(chan error, 1)
	go func() { put <- presence(rctx) }()
	last, caughtUp, err := e.st.ConnectorsCaughtUp(rctx, prevSeq)
	if err == nil {
		r.lastSeq, r.seqRead = last, true
	}
	putErr := <-put
	member, hears := false, false
	if m, ok := e.plainStore().(clusterMember); ok {
		member, hears = m.Quorum(fenceAfter)
	}
	switch {
	case member && !hears && putErr != nil:
		r.fresh = false
	case err == nil:
		r.fresh = caughtUp
	case putErr == nil:
		r.fresh = true
	default:
		// Neither answered: a partition, or leader elections (several
		// seconds after a member's loss, measured). A member that hears
		// a quorum of the cluster is in an election: no write can
		// commit without a server it hears, so it misses nothing.
		r.fresh = hears
	}
	if !r.fresh {
		e.log.Debug("fence: a round found the store not fresh", "last_seq_err", err, "caught_up", caughtUp, "presence_err", putErr, "member", member, "hears_quorum", hears)
	}
	return r
}

// clusterMember is a store that may be a member of a cluster of embedded
// NATS servers (store.JetStream).
type clusterMember interface {
	Quorum(window time.Duration) (member, hears bool)
}

// freshness applies a round's success (fresh, now its start) or a tick's
// check (now): a success unfences; fenceAfter without one fences, once,
// and closes the tunnels.
func (e *Edge) freshness(fresh bool, now time.Time) {
	e.fence.mu.Lock()
	was := e.fence.fenced
	switch {
	case fresh:
		if now.After(e.fence.lastFresh) {
			e.fence.lastFresh = now
		}
		e.fence.fenced = false
	case e.fence.enabled && now.Sub(e.fence.lastFresh) >= fenceAfter:
		e.fence.fenced = true
	}
	is, since := e.fence.fenced, now.Sub(e.fence.lastFresh)
	e.fence.mu.Unlock()
	switch {
	case is && !was:
		e.log.Error("edge fenced: the store has not answered; refusing tunnels, enrollments, renewals, sessions and new clients, and closing the tunnels until it does",
			"store_silent_for", since.Round(time.Millisecond).String())
		// At once and side by side: each Shutdown may wait a second for
		// its connector's close, and the fence loop must go on ticking.
		for _, s := range e.sessions() {
			e.handlers.Go(func() { s.Shutdown() })
		}
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
	return &wire.Refusal{Code: wire.CodeUnavailable, Reason: FencedReason}
}

// fencedClient refuses client c (for service, if named) while the edge is
// fenced; nil when it is not.
func (e *Edge) fencedClient(service string, c admission.Client) *admission.Refusal {
	if !e.Fenced() {
		return nil
	}
	return e.Refused(admission.Refuse(admission.ReasonStoreLost, service, "%s", FencedReason), c)
}
