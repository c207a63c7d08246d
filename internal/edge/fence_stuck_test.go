package edge

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/store"
)

// TestFenceWhenWatchStuck: a store that answers is not enough. When the
// edge's connectors watch stops delivering (here: its callback is held)
// while another edge writes, the edge fences although its presence
// writes succeed, and it unfences once the watch has caught up.
func TestFenceWhenWatchStuck(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	logs := &logbuf.Buffer{}
	e, err := New(config.Edge{
		DataDir: t.TempDir(),
		Tunnel:  config.EdgeTunnel{Listen: "127.0.0.1:0"},
		Admin:   config.Admin{Listen: "127.0.0.1:0"},
		Store:   config.Store{URL: srv.ClientURL()},
	}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-e.Ready():
	case err := <-done:
		t.Fatalf("edge did not start: %v", err)
	}
	other, err := store.Open(t.Context(), store.Options{URL: srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	e.conns.Lock() // identityChanged waits: the watch delivers nothing
	held := true
	defer func() {
		if held {
			e.conns.Unlock()
		}
	}()
	if err := other.PutConnector(t.Context(), store.Connector{ID: "c1", Name: "one"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !e.Fenced() {
		if time.Now().After(deadline) {
			t.Fatalf("not fenced while the watch was stuck:\n%s", logs.Tail(20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if logs.Count("edge fenced") != 1 {
		t.Fatalf("fence not logged:\n%s", logs.Tail(20))
	}
	e.conns.Unlock()
	held = false
	logs.WaitFor(t, 5*time.Second, 1, "edge unfenced")
	if e.Fenced() {
		t.Fatal("still fenced after the watch caught up")
	}
}
