package edge

import (
	"fmt"
	"testing"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
)

// benchEdge returns an edge that knows n connectors, each with one live
// tunnel offering and granted its own service, "svc-<i>", and "shared",
// which all of them offer: the bookkeeping of a large edge,
// without sockets (the tunnels are never used as connections).
func benchEdge(b *testing.B, n int) (*Edge, []store.Connector) {
	b.Helper()
	e, err := New(config.Edge{DataDir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]store.Connector, n)
	for i := range recs {
		services := []string{fmt.Sprintf("svc-%d", i), "shared"}
		c := store.Connector{ID: fmt.Sprintf("%040x", i), Name: fmt.Sprintf("site-%d", i), Grants: services, Revision: 1}
		recs[i] = c
		e.identityChanged(c)
		if _, ok := e.register(new(tunnel.Session), &tunnelInfo{connectorID: c.ID, name: c.Name, offered: services}); !ok {
			b.Fatal("register refused")
		}
	}
	return e, recs
}

// BenchmarkConnsAt10k measures, at an edge holding 10,000 tunnels of
// 10,000 connectors, what each hello (count and register), each watch
// event (identityChanged), each connector row of the admin list (view)
// and each session use bound to a connector (sessionRoute) costs.
func BenchmarkConnsAt10k(b *testing.B) {
	const n = 10_000
	e, recs := benchEdge(b, n)
	c := recs[n/2]
	b.Run("hello", func(b *testing.B) {
		for b.Loop() {
			e.tunnelsOf(c.ID)
		}
	})
	b.Run("watch-event", func(b *testing.B) {
		for b.Loop() {
			c.Revision++
			e.identityChanged(c)
		}
	})
	b.Run("admin-row", func(b *testing.B) {
		for b.Loop() {
			e.view(c)
		}
	})
	b.Run("session-route", func(b *testing.B) {
		for b.Loop() {
			e.sessionRoute("svc-5000", c.Name)
		}
	})
}

// The indexes hold exactly the live tunnels: a connector's count and a
// session's route by connector name follow its tunnels, and an ended tunnel
// leaves no key behind (an edge that saw 10,000 connectors come and go
// holds nothing for them).
func TestTunnelIndexFollowsTunnels(t *testing.T) {
	e, err := New(config.Edge{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := store.Connector{ID: "a", Name: "site-a", Grants: []string{"db"}, Revision: 1}
	b := store.Connector{ID: "b", Name: "site-b", Grants: []string{"db"}, Revision: 1}
	e.identityChanged(a)
	e.identityChanged(b)
	a1, a2, b1 := new(tunnel.Session), new(tunnel.Session), new(tunnel.Session)
	for sess, c := range map[*tunnel.Session]store.Connector{a1: a, a2: a, b1: b} {
		if _, ok := e.register(sess, &tunnelInfo{connectorID: c.ID, name: c.Name, offered: []string{"db"}}); !ok {
			t.Fatalf("register %s refused", c.Name)
		}
	}
	if got := e.tunnelsOf("a"); got != 2 {
		t.Fatalf("tunnelsOf(a) = %d, want 2", got)
	}
	if got := e.sessionRoute("db", "site-b"); got != b1 {
		t.Fatalf("sessionRoute(db, site-b) = %p, want site-b's tunnel %p", got, b1)
	}
	e.conns.Lock()
	for _, sess := range []*tunnel.Session{a1, a2, b1} {
		if e.removeTunnelLocked(sess) == nil {
			t.Errorf("tunnel %p was not recorded", sess)
		}
	}
	if e.removeTunnelLocked(a1) != nil {
		t.Error("a tunnel removed twice was found again")
	}
	left := len(e.conns.tunnels) + len(e.conns.byID) + len(e.conns.byName)
	e.conns.Unlock()
	if left != 0 {
		t.Fatalf("%d entries left in the tunnel maps after every tunnel ended", left)
	}
}
