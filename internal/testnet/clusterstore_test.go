package testnet_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/witness"
)

// copyFile copies src to dst (mode mode), making dst's directory.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestTwoEdgesAndAWitness runs two edges and a witness as one cluster, as
// a join would leave them (one CA; the witness's route certificate from
// it): a connector enrolls at edge B with a keyfile made at edge A; with
// the witness lost, enrollment still works; a revocation made at A closes
// the connector's tunnel to B within 2 s.
func TestTwoEdgesAndAWitness(t *testing.T) {
	root := t.TempDir()
	dirA, dirB, dirW := filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "w")
	ca, err := pki.LoadOrCreateCA(filepath.Join(dirA, "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
		copyFile(t, filepath.Join(dirA, "pki", f), filepath.Join(dirB, "pki", f), 0o600)
	}
	pkitest.PlaceRoute(t, ca, filepath.Join(dirW, "pki"), "sallyport-witness")
	cA, cB, cW := loopback.FreeAddr(t), loopback.FreeAddr(t), loopback.FreeAddr(t)

	wlogs := &logbuf.Buffer{}
	w, err := witness.New(witness.Options{DataDir: dirW, Listen: cW, Routes: []string{cA, cB}},
		slog.New(slog.NewTextHandler(wlogs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWitness := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() {
		stopWitness()
		<-wdone
	}()

	echo := testnet.Echo(t)
	member := func(dir, self string, routes ...string) testnet.EdgeOptions {
		return testnet.EdgeOptions{DataDir: dir, Expose: map[string]string{"echo": ""}, Tune: func(c *config.Edge) {
			c.Cluster = config.Cluster{Listen: self, Routes: routes}
		}}
	}
	es := testnet.StartEdges(t, member(dirA, cA, cB, cW), member(dirB, cB, cA, cW))
	a, b := es[0], es[1]
	select {
	case <-w.Ready():
	case err := <-wdone:
		t.Fatalf("witness stopped: %v\n%s", err, wlogs)
	case <-time.After(30 * time.Second):
		t.Fatalf("the witness did not join within 30s\n%s", wlogs)
	}

	// A connector enrolls at B with a token made at A, and is served there.
	site := testnet.StartConnector(t, a.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()}, Edges: []string{b.TunnelAddr().String()}})
	site.WaitTunnels(t, 1)
	b.WaitRoutes(t, "echo", 1, 10*time.Second)
	conn := b.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("through b")); err != nil {
		t.Fatal(err)
	}
	conn.CloseWrite()
	if got, err := io.ReadAll(conn); err != nil || string(got) != "through b" {
		t.Fatalf("echo through b: %q, %v", got, err)
	}

	// A revocation at A closes site-a's tunnel to B within 2 s.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := a.AdminClient(t).RevokeConnector(ctx, "site-a"); err != nil {
		t.Fatal(err)
	}
	b.WaitRoutes(t, "echo", 0, 2*time.Second)
	if err := site.Done(t, 20*time.Second); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the revoked connector stopped with %v; want the edge's reason", err)
	}

	// Three copies of everything before a member is lost; then lose the
	// witness: tokens are still made at A and redeemed at B.
	deadline := time.Now().Add(30 * time.Second)
	for {
		reps, err := w.StreamReplicas(ctx)
		short := err
		for name, n := range reps {
			if n != 3 {
				short = fmt.Errorf("%s in %d copies", name, n)
			}
		}
		if short == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every stream in 3 copies after 30s: %v", short)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := a.Status(ctx).Store; st == nil || st.Servers != 3 || st.Online != 3 || st.Leader == "" {
		t.Fatalf("edge A's status of its store: %+v, want 3 servers online and a leader", st)
	}
	s := scrape(t, a.AdminAddr().String(), metricsToken(t, a.Cfg.DataDir))
	s.want(t, `sallyport_store_servers{}`, 3)
	s.want(t, `sallyport_store_servers_online{}`, 3)
	s.want(t, `sallyport_store_leader{}`, 1)
	stopWitness()
	if err := <-wdone; err != nil {
		t.Fatalf("witness: %v", err)
	}
	wdone <- nil // for the deferred stop
	other := testnet.StartConnector(t, a.Keyfile(t, "site-b", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()}, Edges: []string{b.TunnelAddr().String()}})
	other.WaitTunnels(t, 1)
	b.WaitRoutes(t, "echo", 1, 10*time.Second)

	// A's watch learns of site-b, enrolled at B after the loss (a watch
	// whose consumer lived on the lost server is recreated within about a
	// second, see store/watch.go); then a revocation at A reaches B
	// within 2 s, as before the loss.
	knows := time.Now()
	for {
		cs, err := a.AdminClient(t).Connectors(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(cs, func(c admin.Connector) bool { return c.Name == "site-b" }) {
			break
		}
		if time.Since(knows) > 5*time.Second {
			t.Fatalf("edge A does not know site-b, enrolled at B, 5s after: its watch stalled after the witness's loss")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("edge A learned of site-b %v after B served it", time.Since(knows))
	if _, err := a.AdminClient(t).RevokeConnector(ctx, "site-b"); err != nil {
		t.Fatal(err)
	}
	b.WaitRoutes(t, "echo", 0, 2*time.Second)
	if st := b.Status(ctx).Store; st == nil || st.Online != 2 || st.Leader == "" {
		t.Errorf("edge B's status of its store after the witness's loss: %+v, want 2 online and a leader", st)
	}
}

// An edge given a cluster port but no route to another member works as a
// single edge, as before (NATS forms no JetStream cluster of one), and
// opens no cluster port.
func TestEdgeWithClusterPortAndNoRoute(t *testing.T) {
	echo := testnet.Echo(t)
	clusterAddr := loopback.FreeAddr(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}, Tune: func(c *config.Edge) {
		c.Cluster = config.Cluster{Listen: clusterAddr}
	}})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()}})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	conn := e.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("alone"))
	conn.CloseWrite()
	if got, err := io.ReadAll(conn); err != nil || string(got) != "alone" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if st := e.Status(context.Background()).Store; st != nil {
		t.Errorf("a single edge reports a store cluster: %+v", st)
	}
	if l, err := net.Listen("tcp", clusterAddr); err != nil {
		t.Errorf("the cluster port %s is taken on a single edge: %v", clusterAddr, err)
	} else {
		l.Close()
	}
	e.Logs.WaitFor(t, time.Second, 1, "no route to another member")
}
