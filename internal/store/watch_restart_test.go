package store

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestWatchResumesAfterServerRestart: an edge's watch on an external NATS
// delivers writes made after the server restarts at once, not after the
// NATS client's ordered consumer misses enough heartbeats to start over
// (18 s measured): a revocation must reach every edge within 2 s.
func TestWatchResumesAfterServerRestart(t *testing.T) {
	dir := t.TempDir()
	start := func(port int) *server.Server {
		t.Helper()
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("NATS did not start")
		}
		return srv
	}
	srv := start(-1)
	port := srv.Addr().(*net.TCPAddr).Port
	var stores []*JetStream
	for range 2 {
		s, err := Open(t.Context(), Options{URL: srv.ClientURL(), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	watcher, writer := stores[0], stores[1]
	got := make(chan Connector, 10)
	stop, err := watcher.WatchConnectors(t.Context(), func(c Connector) { got <- c })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := writer.PutConnector(t.Context(), Connector{ID: "before", Name: "before"}); err != nil {
		t.Fatal(err)
	}
	if c := <-got; c.ID != "before" {
		t.Fatalf("watch delivered %q", c.ID)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	srv = start(port)
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	// The writer's client reconnects too; its first tries may time out.
	for deadline := time.Now().Add(20 * time.Second); ; {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := writer.PutConnector(ctx, Connector{ID: "after", Name: "after"})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write after the restart: %v", err)
		}
	}
	written := time.Now()
	select {
	case c := <-got:
		if c.ID != "after" {
			t.Fatalf("watch delivered %q, want the write made after the restart", c.ID)
		}
		t.Logf("delivered %s after the write", time.Since(written))
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not deliver a write made after the server restarted")
	}
	// It is caught up: the fence's check passes.
	last, _, err := watcher.ConnectorsCaughtUp(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := watcher.ConnectorsCaughtUp(t.Context(), last); !ok {
		t.Fatal("the resumed watch is not caught up")
	}
}
