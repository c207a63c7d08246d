package witness

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/store/membertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewRefusesBadOptions(t *testing.T) {
	_, err := New(Options{Listen: "6222", Advertise: "nohost"}, nil)
	for _, want := range []string{"--data", "--cluster-listen", "--cluster-advertise"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to name %s", err, want)
		}
	}
}

// A witness that has not joined (no route certificate) or knows no member
// says what to do, and opens nothing.
func TestRunRefusesWithoutIdentityOrRoute(t *testing.T) {
	dir := t.TempDir()
	w, err := New(Options{DataDir: dir, Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Run(ctx); err == nil || !strings.Contains(err.Error(), "join the cluster") {
		t.Fatalf("no route certificate: err = %v", err)
	}

	pkitest.PlaceRoute(t, pkitest.NewCA(t), filepath.Join(dir, "pki"), "sallyport-witness")
	if err := w.Run(ctx); err == nil || !strings.Contains(err.Error(), "--cluster-route") {
		t.Fatalf("no route: err = %v, want one that names --cluster-route", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nats")); err == nil {
		t.Error("a witness without a route created its store")
	}
}

// TestWitnessJoinsAndStops: a witness with routes to two members makes
// the third server, says so in its log, and stops cleanly when told.
func TestWitnessJoinsAndStops(t *testing.T) {
	ca := pkitest.NewCA(t)
	addrs := []string{loopback.FreeAddr(t), loopback.FreeAddr(t), loopback.FreeAddr(t)}
	dir := t.TempDir()
	pkitest.PlaceRoute(t, ca, filepath.Join(dir, "pki"), "sallyport-witness")
	logs := &logbuf.Buffer{}
	w, err := New(Options{DataDir: dir, Listen: addrs[2], Routes: addrs[:2]}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	membertest.OpenMembers(t, ca, addrs, 2) // two edges' stores; addrs[2] is the witness's
	select {
	case <-w.Ready():
	case err := <-done:
		t.Fatalf("witness stopped: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("the witness did not join within 30s\n%s", logs)
	}
	logs.WaitFor(t, 5*time.Second, 1, "witness joined the cluster")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("witness stopped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the witness did not stop within 10s of being told")
	}
	logs.WaitFor(t, time.Second, 1, "witness stopping")
}
