package edge

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/store"
)

// TestSlowFreshRoundsDoNotFence: rounds whose presence write waits out
// its whole timeout (its bucket electing a leader) while the connectors
// check answers are fresh, only slow. The edge must not fence at the tick
// after each of them (it did, closing every tunnel every two seconds).
func TestSlowFreshRoundsDoNotFence(t *testing.T) {
	logs := &logbuf.Buffer{}
	dir := t.TempDir()
	e, err := New(config.Edge{DataDir: dir}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), store.Options{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e.st = st
	e.fence.enabled = true
	electing := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	ctx, cancel := context.WithTimeout(context.Background(), 4*fenceAfter)
	defer cancel()
	e.fenceTicks(ctx, electing)
	if n := logs.Count("edge fenced"); n != 0 {
		t.Fatalf("slow but fresh rounds fenced the edge %d times:\n%s", n, logs)
	}

	// The converse: rounds that are not fresh (the store closed) fence.
	st.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 3*fenceAfter)
	defer cancel()
	e.fenceTicks(ctx, electing)
	if !e.Fenced() {
		t.Fatalf("rounds with no answer at all did not fence the edge:\n%s", logs)
	}
}
