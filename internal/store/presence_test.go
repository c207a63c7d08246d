package store

import (
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/store/storetest"
)

// presenceEvent is what a presence watcher saw: a set, or a gone (Gone).
type presenceEvent struct {
	p    EdgePresence
	gone string
}

func watchPresenceEvents(t *testing.T, s *JetStream) <-chan presenceEvent {
	t.Helper()
	events := make(chan presenceEvent, 64)
	stop, err := s.WatchPresence(t.Context(),
		func(p EdgePresence) { events <- presenceEvent{p: p} },
		func(id string) { events <- presenceEvent{gone: id} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return events
}

// nextEvent waits for the next watch event, failing after timeout.
func nextEvent(t *testing.T, events <-chan presenceEvent, timeout time.Duration) presenceEvent {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no presence event within %s", timeout)
		return presenceEvent{}
	}
}

// TestPresenceExpires: an edge that stops renewing its key leaves the set
// within PresenceTTL, and another edge's watcher is told so (the delete
// marker the bucket's age limit leaves); a graceful stop's deletion is
// seen at once. Both edges share one external NATS, as in a cluster.
func TestPresenceExpires(t *testing.T) {
	url := storetest.StartNATS(t)
	a, err := Open(t.Context(), Options{URL: url, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := Open(t.Context(), Options{URL: url, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	events := watchPresenceEvents(t, b)

	for _, id := range []string{"edge-a", "edge-c"} {
		if err := a.PutPresence(t.Context(), EdgePresence{ID: id, Addresses: []string{"127.0.0.1:5500"}, Started: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if ev := nextEvent(t, events, 5*time.Second); ev.p.ID != id || ev.p.Addresses[0] != "127.0.0.1:5500" {
			t.Fatalf("watcher saw %+v, want edge %s set", ev, id)
		}
	}
	if err := a.DeletePresence(t.Context(), "edge-c"); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events, 5*time.Second); ev.gone != "edge-c" {
		t.Fatalf("after a graceful stop the watcher saw %+v, want edge-c gone", ev)
	}
	// edge-a is not renewed: it must lapse after PresenceTTL, not before.
	start := time.Now()
	ev := nextEvent(t, events, PresenceTTL+5*time.Second)
	if ev.gone != "edge-a" {
		t.Fatalf("watcher saw %+v, want edge-a gone", ev)
	}
	if took := time.Since(start); took < PresenceTTL-time.Second {
		t.Fatalf("edge-a left the set after %s, before its %s lifetime", took, PresenceTTL)
	}
	// A watcher started now sees no live edge (only, perhaps, the
	// markers of those gone).
	late := watchPresenceEvents(t, a)
	for {
		select {
		case ev := <-late:
			if ev.gone == "" {
				t.Fatalf("a new watcher saw %+v in an empty set", ev)
			}
			continue
		default:
		}
		break
	}
}

// TestPresenceRenewalKeepsKey: a key renewed more often than its lifetime
// never lapses.
func TestPresenceRenewalKeepsKey(t *testing.T) {
	s, err := Open(t.Context(), Options{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	events := watchPresenceEvents(t, s)
	p := EdgePresence{ID: "edge-r", Addresses: []string{"a:1"}}
	deadline := time.Now().Add(PresenceTTL + 2*time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if err := s.PutPresence(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		<-tick.C
	}
	for {
		select {
		case ev := <-events:
			if ev.gone != "" {
				t.Fatalf("a renewed key lapsed: %+v", ev)
			}
			continue
		default:
		}
		return
	}
}

// TestConnectorsCaughtUp: the fence's check compares the bucket's last
// sequence with what the connectors watch delivered.
func TestConnectorsCaughtUp(t *testing.T) {
	s, err := Open(t.Context(), Options{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.PutConnector(t.Context(), Connector{ID: "c1", Name: "one"}); err != nil {
		t.Fatal(err)
	}
	last, _, err := s.ConnectorsCaughtUp(t.Context(), 0)
	if err != nil || last == 0 {
		t.Fatalf("last sequence %d, %v", last, err)
	}
	if _, ok, _ := s.ConnectorsCaughtUp(t.Context(), last); ok {
		t.Fatal("caught up without a watch")
	}
	got := make(chan Connector, 4)
	stop, err := s.WatchConnectors(t.Context(), func(c Connector) { got <- c })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, ok, _ := s.ConnectorsCaughtUp(t.Context(), last); !ok {
		t.Fatal("the watch delivered the bucket but is not caught up")
	}
	s.Close()
	if _, _, err := s.ConnectorsCaughtUp(t.Context(), last); err == nil {
		t.Fatal("a closed store answered")
	}
}
