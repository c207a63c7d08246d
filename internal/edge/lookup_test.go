package edge

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
)

// TestLookupFallsBackToTheStore: a connector enrolled at another edge a
// moment ago, which this edge's watch has not brought yet (here: no
// watch runs), is found by name for an operator's revocation; a name no
// one enrolled is refused saying so.
func TestLookupFallsBackToTheStore(t *testing.T) {
	e, st := edgeOnStore(t)
	rec := store.Connector{ID: "0123456789abcdef0123456789abcdef", Name: "site-a", TokenID: "0123456789abcdef",
		EnrolledAt: time.Now().UTC(), NotAfter: time.Now().Add(time.Hour).UTC()}
	if err := st.PutConnector(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	got, err := e.RevokeConnector(t.Context(), "site-a")
	if err != nil || got.ID != rec.ID || got.RevokedAt.IsZero() {
		t.Fatalf("revoke a connector only the store knows: %+v, %v", got, err)
	}
	if _, err := e.RevokeConnector(t.Context(), "site-b"); err == nil || !strings.Contains(err.Error(), `no connector is enrolled as "site-b"`) {
		t.Fatalf("revoke an unknown name: %v", err)
	}
}

// edgeOnStore is an edge that is not run (no watch feeds it) on an
// embedded store of its own, closed when the test ends.
func edgeOnStore(t *testing.T) (*Edge, *store.JetStream) {
	t.Helper()
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), store.Options{Dir: filepath.Join(t.TempDir(), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	return e, st
}
