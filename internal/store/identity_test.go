package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/store/storetest"
)

func putConnector(t *testing.T, s *JetStream, c Connector) {
	t.Helper()
	if err := s.PutConnector(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// UpdateConnector writes what fn made of the record; fn's error writes
// nothing and comes back unchanged; a missing record is ErrNotFound.
func TestUpdateConnector(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	putConnector(t, s, Connector{ID: "c1", Name: "site-a"})
	got, err := s.UpdateConnector(ctx, "c1", func(c *Connector) error {
		c.Grants = append(c.Grants, "db")
		return nil
	})
	if err != nil || !slices.Equal(got.Grants, []string{"db"}) {
		t.Fatalf("update: %+v, %v", got, err)
	}
	stored, _ := s.GetConnector(ctx, "c1")
	if !slices.Equal(stored.Grants, []string{"db"}) || stored.Name != "site-a" {
		t.Errorf("stored %+v after the update", stored)
	}
	mine := errors.New("not today")
	if _, err := s.UpdateConnector(ctx, "c1", func(c *Connector) error {
		c.Grants = nil
		return mine
	}); err != mine {
		t.Errorf("fn's error came back as %v", err)
	}
	if stored, _ := s.GetConnector(ctx, "c1"); !slices.Equal(stored.Grants, []string{"db"}) {
		t.Errorf("a refused update changed the record: %+v", stored)
	}
	if _, err := s.UpdateConnector(ctx, "nobody", func(*Connector) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing connector: %v", err)
	}
}

// Concurrent updates from two edges sharing one store lose none.
func TestUpdateConnectorConcurrent(t *testing.T) {
	dir := t.TempDir()
	url := storetest.StartNATS(t)
	_ = dir
	var stores []*JetStream
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := Open(ctx, Options{URL: url, Logger: testLogger(t)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	putConnector(t, stores[0], Connector{ID: "c1", Name: "site-a"})
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, err := stores[i%2].UpdateConnector(context.Background(), "c1", func(c *Connector) error {
				c.Grants = append(c.Grants, fmt.Sprintf("svc%02d", i))
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	c, _ := stores[1].GetConnector(context.Background(), "c1")
	if len(c.Grants) != n {
		t.Errorf("%d grants after %d concurrent updates: %v", len(c.Grants), n, c.Grants)
	}
}

// UpdateToken can revoke a token; ConsumeToken's check then sees it.
func TestUpdateTokenRevokes(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	if err := s.CreateToken(ctx, newToken("t1")); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Truncate(time.Second)
	if _, err := s.UpdateToken(ctx, "t1", func(tk *Token) error { tk.RevokedAt = at; return nil }); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("revoked")
	_, err := s.ConsumeToken(ctx, "t1", func(tk Token) error {
		if tk.Revoked() {
			return refused
		}
		return nil
	}, "c1", at)
	if err != refused {
		t.Errorf("consuming a revoked token: %v", err)
	}
	if tk, _ := s.GetToken(ctx, "t1"); tk.Used() || !tk.RevokedAt.Equal(at) {
		t.Errorf("token after: %+v", tk)
	}
}

// WatchConnectors gives every record first, returns, then each change in
// order; after stop it gives nothing more.
func TestWatchConnectors(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	putConnector(t, s, Connector{ID: "c1", Name: "site-a"})
	putConnector(t, s, Connector{ID: "c2", Name: "site-b"})
	seen := make(chan Connector, 16)
	stop, err := s.WatchConnectors(ctx, func(c Connector) { seen <- c })
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 {
		t.Fatalf("WatchConnectors returned with %d records delivered, want 2", len(seen))
	}
	<-seen
	<-seen
	if _, err := s.UpdateConnector(ctx, "c2", func(c *Connector) error { c.RevokedAt = time.Now(); return nil }); err != nil {
		t.Fatal(err)
	}
	putConnector(t, s, Connector{ID: "c3", Name: "site-c"})
	for _, want := range []string{"c2", "c3"} {
		select {
		case c := <-seen:
			if c.ID != want {
				t.Fatalf("got %s, want %s", c.ID, want)
			}
			if want == "c2" && !c.Revoked() {
				t.Errorf("the change to c2 came without its revocation: %+v", c)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no change delivered for %s", want)
		}
	}
	stop()
	putConnector(t, s, Connector{ID: "c4", Name: "site-d"})
	// A later watch sees c4, so the write is done; the stopped one must not.
	later, err := s.WatchConnectors(ctx, func(Connector) {})
	if err != nil {
		t.Fatal(err)
	}
	later()
	if len(seen) != 0 {
		t.Errorf("a stopped watch delivered %v", <-seen)
	}
}

// Audit events are read back in order, each once, from a time on; a
// follower sees new ones as they come and stops with its context.
func TestAuditTrail(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	read := func(since time.Time) []AuditEvent {
		t.Helper()
		var out []AuditEvent
		if err := s.ReadAudit(ctx, since, false, func(ev AuditEvent) error { out = append(out, ev); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if evs := read(time.Time{}); len(evs) != 0 {
		t.Fatalf("an empty trail read %d events", len(evs))
	}
	t0 := time.Now().Add(-time.Minute)
	for i, a := range []string{"enroll", "grant", "revoke"} {
		if err := s.Audit(ctx, AuditEvent{Time: t0.Add(time.Duration(i) * time.Second), Edge: "e1", Actor: "admin via socket", Action: a, Subject: "site-a", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	evs := read(time.Time{})
	if len(evs) != 3 || evs[0].Action != "enroll" || evs[2].Action != "revoke" || evs[2].Seq <= evs[0].Seq {
		t.Fatalf("read back %+v", evs)
	}
	// since filters by the time the event was stored; all three were
	// stored just now, so a time in the future reads none.
	if evs := read(time.Now().Add(time.Hour)); len(evs) != 0 {
		t.Errorf("events after the last one: %+v", evs)
	}

	fctx, cancel := context.WithCancel(ctx)
	got := make(chan AuditEvent, 8)
	done := make(chan error, 1)
	go func() {
		done <- s.ReadAudit(fctx, time.Time{}, true, func(ev AuditEvent) error { got <- ev; return nil })
	}()
	for range 3 {
		<-got
	}
	if err := s.Audit(ctx, AuditEvent{Edge: "e1", Actor: "edge", Action: "hello", Subject: "site-b", Result: "refused: not granted db"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-got:
		if ev.Action != "hello" || ev.Time.IsZero() {
			t.Errorf("followed %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a follower did not see a new event")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("a follower ended by its context returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a follower did not stop with its context")
	}
}
