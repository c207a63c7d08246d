package fence

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/store/membertest"
)

// newFence is a fence that logs to logs and counts its fencings.
func newFence(logs *logbuf.Buffer, fencings *int) *Fence {
	return &Fence{
		Log:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:     time.Now,
		OnFence: func() { *fencings++ },
	}
}

// TestTransitions: the fence closes only after After without a fresh
// round, says so and calls OnFence once, and lifts at the first fresh
// round, saying so once.
func TestTransitions(t *testing.T) {
	logs, fencings := &logbuf.Buffer{}, 0
	f := newFence(logs, &fencings)
	t0 := time.Unix(1_000_000, 0)
	f.lastFresh, f.enabled = t0, true
	f.freshness(false, t0.Add(After-time.Millisecond))
	if f.Fenced() {
		t.Fatal("fenced before After")
	}
	for i := range 3 {
		f.freshness(false, t0.Add(After+time.Duration(i)*Tick))
		if !f.Fenced() {
			t.Fatal("not fenced after After without a fresh round")
		}
	}
	if n := logs.Count("edge fenced"); n != 1 || fencings != 1 {
		t.Fatalf("the fence was logged %d times and OnFence called %d times, want once each", n, fencings)
	}
	f.freshness(true, t0.Add(10*time.Second))
	if f.Fenced() {
		t.Fatal("still fenced after a fresh round")
	}
	if n := logs.Count("edge unfenced"); n != 1 {
		t.Fatalf("unfencing was logged %d times, want once", n)
	}
}

// TestOffWhenNotEnabled: a fence not enabled (a lone edge's own embedded
// store) never closes, however long its store is slow.
func TestOffWhenNotEnabled(t *testing.T) {
	fencings := 0
	f := newFence(&logbuf.Buffer{}, &fencings)
	t0 := time.Unix(1_000_000, 0)
	f.lastFresh = t0
	f.freshness(false, t0.Add(time.Hour))
	if f.Fenced() || fencings != 0 {
		t.Fatal("a fence not enabled closed")
	}
}

// TestSlowFreshRoundsDoNotFence: rounds whose presence write waits out
// its whole timeout (its bucket electing a leader) while the connectors
// check answers are fresh, only slow. The fence must not close at the
// tick after each of them (it did, closing every tunnel every two
// seconds).
func TestSlowFreshRoundsDoNotFence(t *testing.T) {
	logs, fencings := &logbuf.Buffer{}, 0
	st, err := store.Open(t.Context(), store.Options{Dir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := newFence(logs, &fencings)
	f.Enable(true)
	electing := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	checks := Checks{Presence: electing, CaughtUp: st.ConnectorsCaughtUp}
	ctx, cancel := context.WithTimeout(context.Background(), 4*After)
	defer cancel()
	f.Run(ctx, checks)
	if n := logs.Count("edge fenced"); n != 0 {
		t.Fatalf("slow but fresh rounds fenced the edge %d times:\n%s", n, logs)
	}

	// The converse: rounds that are not fresh (the store closed) fence.
	st.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 3*After)
	defer cancel()
	f.Run(ctx, checks)
	if !f.Fenced() {
		t.Fatalf("rounds with no answer at all did not fence the edge:\n%s", logs)
	}
}

// TestCutOffLeaderFences: an edge whose own store server leads the
// connectors bucket is cut off from the other members. Its reads of that
// bucket still answer (the leader answers from what it holds until it
// steps down, 10 to 20 s later), but it hears no quorum and its writes do
// not commit: it must fence within the fence's bound, not when its
// server steps down. The partitioned edge of the namespace suite kept
// serving when it happened to be the leader.
func TestCutOffLeaderFences(t *testing.T) {
	ca := pkitest.NewCA(t)
	addrs := []string{loopback.FreeAddr(t), loopback.FreeAddr(t), loopback.FreeAddr(t)}
	sts := membertest.OpenMembers(t, ca, addrs, 3)
	leader := -1
	for end := time.Now().Add(30 * time.Second); leader < 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("no member leads the connectors bucket after 30s")
		}
		for i, st := range sts {
			if st.LeadsBucket(store.BucketConnectors) {
				leader = i
			}
		}
	}
	st := sts[leader]

	logs, fencings := &logbuf.Buffer{}, 0
	f := newFence(logs, &fencings)
	f.Enable(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx, Checks{
			Presence: func(ctx context.Context) error { return st.PutPresence(ctx, store.EdgePresence{ID: "cut"}) },
			CaughtUp: st.ConnectorsCaughtUp,
			Quorum:   st.Quorum,
		})
	}()
	defer func() { cancel(); <-done }()

	for i, other := range sts {
		if i != leader {
			other.Close()
		}
	}
	cut := time.Now()
	// The premise: alone, the leader still answers the read.
	rctx, rcancel := context.WithTimeout(ctx, After)
	_, _, rerr := st.ConnectorsCaughtUp(rctx, 0)
	rcancel()
	if rerr != nil || !st.LeadsBucket(store.BucketConnectors) {
		t.Fatalf("the cut-off leader no longer answers reads (%v): the test proves nothing", rerr)
	}
	// The bound: After plus a round in flight (After) and a tick, with
	// room for a slow machine; the leader steps down no sooner than 10 s.
	for !f.Fenced() {
		if time.Since(cut) > 8*time.Second {
			t.Fatalf("the cut-off leader's edge was not fenced 8s after the cut:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("fenced %s after the cut", time.Since(cut).Round(time.Millisecond))
}
