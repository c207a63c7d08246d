package edge

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/store/membertest"
)

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

	logs := &logbuf.Buffer{}
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	e.fence.enabled = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.fenceTicks(ctx, func(ctx context.Context) error { return st.PutPresence(ctx, store.EdgePresence{ID: "cut"}) })
	}()
	defer func() { cancel(); <-done }()

	for i, other := range sts {
		if i != leader {
			other.Close()
		}
	}
	cut := time.Now()
	// The premise: alone, the leader still answers the read.
	rctx, rcancel := context.WithTimeout(ctx, fenceAfter)
	_, _, rerr := st.ConnectorsCaughtUp(rctx, 0)
	rcancel()
	if rerr != nil || !st.LeadsBucket(store.BucketConnectors) {
		t.Fatalf("the cut-off leader no longer answers reads (%v): the test proves nothing", rerr)
	}
	// The bound: fenceAfter plus a round in flight (fenceAfter) and a
	// tick, with room for a slow machine; the leader steps down no
	// sooner than 10 s.
	for !e.Fenced() {
		if time.Since(cut) > 8*time.Second {
			t.Fatalf("the cut-off leader's edge was not fenced 8s after the cut:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("fenced %s after the cut", time.Since(cut).Round(time.Millisecond))
}
