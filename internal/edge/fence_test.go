package edge

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/fence"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// TestFencedEdgeRefuses: once its fence has closed (here: a store that
// answers nothing), the edge refuses connectors and clients with the
// reason, logging the client's refusal with its reason.
func TestFencedEdgeRefuses(t *testing.T) {
	logs := &logbuf.Buffer{}
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if e.fencedRefusal() != nil || e.fencedClient("echo", admission.Client{Via: "tcp"}) != nil {
		t.Fatal("an edge whose fence never closed refuses")
	}
	lost := errors.New("no store")
	e.fence.Enable(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.fence.Run(ctx, fence.Checks{
			Presence: func(context.Context) error { return lost },
			CaughtUp: func(context.Context, uint64) (uint64, bool, error) { return 0, false, lost },
		})
	}()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); !e.Fenced(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not fenced 10s after the store stopped answering:\n%s", logs)
		}
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
}
