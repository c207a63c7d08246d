package testnet_test

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
)

// TestNewEdgeReadyOnceItHoldsTunnels: an edge that joins a cluster whose
// other edge holds two connectors' tunnels says "starting" on /readyz,
// so that a balancer sends it no client it would have to refuse for want
// of a route, and is ready once those connectors hold tunnels to it.
func TestNewEdgeReadyOnceItHoldsTunnels(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	a := cl.startEdge()
	echo := testnet.Echo(t)
	spreadless := func(cfg *config.Connector) { cfg.Tunnel.JoinSpread = time.Hour } // b is never dialled by announcement
	var dirs []string
	var conns []*testnet.Connector
	for _, name := range []string{"site-1", "site-2"} {
		dir := filepath.Join(t.TempDir(), name)
		c := testnet.StartConnector(t, a.Keyfile(t, name, time.Hour, "echo"), testnet.ConnectorOptions{
			DataDir: dir, Services: map[string]string{"echo": echo.Addr()}, Tune: spreadless})
		c.WaitTunnels(t, 1)
		dirs, conns = append(dirs, dir), append(conns, c)
	}
	// a's presence says it holds both before b starts: b reads the
	// others' records once at its start.
	probe, err := store.Open(t.Context(), store.Options{URL: cl.nats.url()})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	held := make(chan int, 64)
	stop, err := probe.WatchPresence(t.Context(), func(p store.EdgePresence) {
		select {
		case held <- p.Connectors:
		default:
		}
	}, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for n := 0; n != 2; {
		select {
		case n = <-held:
		case <-time.After(10 * time.Second):
			t.Fatalf("edge a's presence says %d connectors, not 2", n)
		}
	}

	b := cl.startEdge()
	addr := b.AdminAddr().String()
	wantProbe(t, addr, "/readyz", http.StatusServiceUnavailable, "starting: waiting for the connectors' tunnels\n")
	wantProbe(t, addr, "/livez", http.StatusOK, "ok\n")

	// The connectors come back knowing both edges (a restart reads the
	// edge set it saved), and dial b at once.
	for i, c := range conns {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		c = testnet.StartConnector(t, "", testnet.ConnectorOptions{
			DataDir: dirs[i], Edges: []string{a.TunnelAddr().String(), b.TunnelAddr().String()},
			Services: map[string]string{"echo": echo.Addr()}, Tune: spreadless})
		c.WaitTunnels(t, 2)
	}
	eventuallyProbe(t, 10*time.Second, addr, "/readyz", http.StatusOK, "ok\n")
	b.Logs.WaitFor(t, 5*time.Second, 1, "warmed up: ready for clients", "connectors=2")
	if got := roundTrip(t, b.Dial(t, "echo"), []byte("warm")); string(got) != "warm" {
		t.Fatalf("through the warm edge: %q", got)
	}
}
