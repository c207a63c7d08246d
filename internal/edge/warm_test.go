package edge

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
)

// TestWarmUpRule: a restarted cluster edge is not ready until it holds
// 90 % of what the median other live edge holds (draining edges do not
// count), or a minute has passed; once warm it stays warm.
func TestWarmUpRule(t *testing.T) {
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_000_000, 0)
	now := t0
	e.now = func() time.Time { return now }
	e.members.started = t0
	e.members.live = map[string]store.EdgePresence{
		"a": {ID: "a", Connectors: 10},
		"b": {ID: "b", Connectors: 20},
		"c": {ID: "c", Connectors: 30},
		"d": {ID: "d", Connectors: 1000, Draining: true},
	}
	hold := func(n int) { // n connectors with a tunnel to e
		e.conns.byID = make(tunnelIndex)
		for i := range n {
			e.conns.byID.add(fmt.Sprint(i), &tunnel.Session{}, nil)
		}
	}
	if e.warmedUp() {
		t.Fatal("warm holding nothing while the median edge holds 20")
	}
	hold(17)
	if e.warmedUp() {
		t.Fatal("warm holding 17 of the median's 20")
	}
	hold(18)
	if !e.warmedUp() {
		t.Fatal("not warm holding 18 of the median's 20")
	}
	hold(0)
	if !e.warmedUp() {
		t.Fatal("a warm edge went cold when its connectors left")
	}

	e.warm.Store(false)
	now = t0.Add(warmupMax)
	if !e.warmedUp() {
		t.Fatal("not warm after warmupMax")
	}

	lone, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	lone.members.started = time.Now()
	if !lone.warmedUp() {
		t.Fatal("an edge with no other edge is not warm")
	}
}
