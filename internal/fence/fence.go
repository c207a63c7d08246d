// Package fence is a cluster edge's freshness fence (docs/cluster.md §5):
// every Tick the edge renews its presence and checks that its connectors
// watch has delivered what the store held a round earlier. If neither has
// succeeded for After, the edge can no longer learn of a revocation in
// time: it is fenced (it serves nothing) until a round succeeds again.
//
//	f := &fence.Fence{Log: log, Now: time.Now, OnFence: closeTunnels}
//	f.Enable(true) // the store is shared with other edges
//	go f.Run(ctx, fence.Checks{Presence: put, CaughtUp: st.ConnectorsCaughtUp, Quorum: st.Quorum})
//	if f.Fenced() { refuse() }
package fence

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

const (
	// Tick is how often a round of checks starts (when none is in flight)
	// and the fence is judged.
	Tick = 500 * time.Millisecond
	// After is how long without a fresh round fences the edge; each
	// round's checks wait at most this long.
	After = 1500 * time.Millisecond
)

// Checks are what a round asks of the store.
type Checks struct {
	// Presence renews the edge's presence: a write that the store's
	// leader must commit.
	Presence func(context.Context) error
	// CaughtUp reads the connectors bucket's last sequence from the
	// store's leader, and reports whether the connectors watch has
	// delivered everything up to prev.
	CaughtUp func(ctx context.Context, prev uint64) (last uint64, caughtUp bool, err error)
	// Quorum, if set, tells whether the store is a member of a cluster of
	// embedded servers, and if so whether it has heard a quorum of its
	// cluster within window.
	Quorum func(window time.Duration) (member, hears bool)
}

// Fence is an edge's freshness state. Set its fields before Run; its
// methods are safe for concurrent use. Its zero value is not fenced and
// not enabled.
type Fence struct {
	Log *slog.Logger
	Now func() time.Time
	// OnFence is called once at each fencing, on the fence's goroutine:
	// the edge closes its tunnels (without waiting).
	OnFence func()
	// Round, if set, observes each round's duration and outcome.
	Round func(d time.Duration, fresh bool)

	mu sync.Mutex
	// fenced is set while the edge cannot trust its view of the store.
	fenced bool
	// lastFresh is when the last successful round started (or Run
	// began).
	lastFresh time.Time
	// enabled is set when the store is shared with other edges: an
	// embedded store that only this process runs cannot be cut off from
	// it, and fencing it would only turn an overloaded edge into a dead
	// one.
	enabled bool
}

// Enable sets whether the fence may fence at all (see Fence.enabled).
func (f *Fence) Enable(on bool) {
	f.mu.Lock()
	f.enabled = on
	f.mu.Unlock()
}

// Fenced reports whether the edge is fenced: it cannot reach its store,
// so it refuses hellos, enrollments, renewals and session uses, routes no
// new client and holds no tunnel. Readiness fails while it is.
func (f *Fence) Fenced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fenced
}

// round is the outcome of one round of the fence's checks.
type round struct {
	started time.Time
	fresh   bool
	// lastSeq is the connectors bucket's last sequence, if it was read.
	lastSeq uint64
	seqRead bool
}

// Run runs the checks in rounds, one at a time, until ctx ends; every
// Tick it fences the edge if no round that started in the last After has
// succeeded and none that may still succeed is in flight (so a revocation
// is honoured within 2 After + Tick at worst). A slow store that answers
// is not a lost one: a round may take up to After, and a success counts
// from its start.
func (f *Fence) Run(ctx context.Context, checks Checks) {
	f.mu.Lock()
	f.lastFresh = f.Now()
	f.mu.Unlock()
	t := time.NewTicker(Tick)
	defer t.Stop()
	var lastSeq uint64
	results := make(chan round, 1)
	inFlight, lastOK := false, true
	var flightStart time.Time
	start := func() {
		inFlight = true
		r, prev := round{started: f.Now()}, lastSeq
		flightStart = r.started
		go func() { results <- f.check(ctx, checks, prev, r) }()
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
			if f.Round != nil {
				f.Round(f.Now().Sub(r.started), r.fresh)
			}
			if r.seqRead {
				lastSeq = r.lastSeq
			}
			if r.fresh {
				f.freshness(true, r.started)
			}
		case <-t.C:
			now := f.Now()
			if !inFlight {
				start()
			}
			// After a fresh round, the round in flight may be slow (one
			// check waiting out its timeout while the other answers)
			// and its success would count from its start: the edge is
			// not fenced before it has had its After. Fencing at every
			// tick after a slow success, and unfencing at the next
			// success, closed every tunnel every two seconds while a
			// lost member's buckets elected leaders. After a failed
			// round the store has had its chance.
			// A round ends by After (its checks' timeout); a tick later
			// its answer is in.
			if !(lastOK && now.Sub(flightStart) < After+Tick) {
				f.freshness(false, now)
			}
		}
	}
}

// check runs a round's two checks at once, each for at most After: the
// presence write (it needs the store's leader), and the connectors
// bucket's last sequence read, with the watch caught up to prevSeq, the
// one read a round earlier. The round is fresh if that read shows the
// watch caught up, or if it failed and the presence write succeeded: so
// one bucket's leader election does not fence the edge (§7), but a read
// that shows the watch behind does, whatever the presence write says —
// the store is there, and this edge is not hearing it. If both failed, a
// cluster member that hears a quorum of its cluster is fresh too: the
// elections after a member's loss took about 6 s, and fenced every edge
// of the majority.
//
// A cluster member that hears no quorum and whose write did not commit
// is cut off, whatever its read says: if its own server leads the
// connectors bucket, the read is answered from what that server holds,
// and NATS's Raft leader steps down only 10 to 20 s after losing its
// quorum. The partitioned edge kept serving for that long when it was
// the leader.
func (f *Fence) check(ctx context.Context, checks Checks, prevSeq uint64, r round) round {
	rctx, cancel := context.WithTimeout(ctx, After)
	defer cancel()
	put := make(chan error, 1)
	go func() { put <- checks.Presence(rctx) }()
	last, caughtUp, err := checks.CaughtUp(rctx, prevSeq)
	if err == nil {
		r.lastSeq, r.seqRead = last, true
	}
	putErr := <-put
	member, hears := false, false
	if checks.Quorum != nil {
		member, hears = checks.Quorum(After)
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
		f.Log.Debug("fence: a round found the store not fresh", "last_seq_err", err, "caught_up", caughtUp, "presence_err", putErr, "member", member, "hears_quorum", hears)
	}
	return r
}

// freshness applies a round's success (fresh, now its start) or a tick's
// check (now): a success unfences; After without one fences, once, and
// calls OnFence.
func (f *Fence) freshness(fresh bool, now time.Time) {
	f.mu.Lock()
	was := f.fenced
	switch {
	case fresh:
		if now.After(f.lastFresh) {
			f.lastFresh = now
		}
		f.fenced = false
	case f.enabled && now.Sub(f.lastFresh) >= After:
		f.fenced = true
	}
	is, since := f.fenced, now.Sub(f.lastFresh)
	f.mu.Unlock()
	switch {
	case is && !was:
		f.Log.Error("edge fenced: the store has not answered; refusing tunnels, enrollments, renewals, sessions and new clients, and closing the tunnels until it does",
			"store_silent_for", since.Round(time.Millisecond).String())
		if f.OnFence != nil {
			f.OnFence()
		}
	case was && !is:
		f.Log.Info("edge unfenced: the store answers again; serving")
	}
}
