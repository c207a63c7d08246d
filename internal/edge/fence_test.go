package edge

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// TestFenceTransitions: the edge fences only after fenceAfter without a
// fresh tick, says so once, refuses connectors and clients with the
// reason while fenced, and unfences at the first fresh tick.
func TestFenceTransitions(t *testing.T) {
	logs := &logbuf.Buffer{}
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_000_000, 0)
	e.fence.lastFresh = t0
	e.fence.enabled = true
	e.freshness(false, t0.Add(fenceAfter-time.Millisecond))
	if e.Fenced() {
		t.Fatal("fenced before fenceAfter")
	}
	for i := range 3 {
		e.freshness(false, t0.Add(fenceAfter+time.Duration(i)*fenceTick))
		if !e.Fenced() {
			t.Fatal("not fenced after fenceAfter without a fresh tick")
		}
	}
	if n := logs.Count("edge fenced"); n != 1 {
		t.Fatalf("the fence was logged %d times, want once", n)
	}
	if ref := e.fencedRefusal(); ref == nil || ref.Reason != FencedReason {
		t.Fatalf("a fenced edge's refusal to a connector: %+v", ref)
	}
	if ref := e.fencedClient("echo", admission.Client{Via: "tcp"}); ref == nil || ref.Reason != admission.ReasonStoreLost {
		t.Fatalf("a fenced edge's refusal to a client: %+v", ref)
	}
	if !strings.Contains(logs.String(), "reason=store_lost") {
		t.Fatal("the client's refusal is not logged with its reason")
	}
	e.freshness(true, t0.Add(10*time.Second))
	if e.Fenced() || e.fencedRefusal() != nil || e.fencedClient("echo", admission.Client{Via: "tcp"}) != nil {
		t.Fatal("still fenced after a fresh tick")
	}
	if n := logs.Count("edge unfenced"); n != 1 {
		t.Fatalf("unfencing was logged %d times, want once", n)
	}
}

// TestFenceOffForLoneStore: an edge whose store is its own embedded one
// never fences, however long its store is slow.
func TestFenceOffForLoneStore(t *testing.T) {
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_000_000, 0)
	e.fence.lastFresh = t0
	e.freshness(false, t0.Add(time.Hour))
	if e.Fenced() {
		t.Fatal("a lone edge fenced itself")
	}
}
