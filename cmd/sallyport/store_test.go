package main_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/store/membertest"
)

// `sallyport store` runs a witness: with two members to route to, it joins
// as the third server and says so; it listens only on its cluster port and
// on a loopback client port that refuses a client without the process's
// token (another local user); SIGTERM stops it, exit 0.
func TestStoreWitness(t *testing.T) {
	ca := pkitest.NewCA(t)
	dir := t.TempDir()
	pkitest.PlaceRoute(t, ca, filepath.Join(dir, "pki"), "sallyport-witness")
	addrs := []string{freePort(t), freePort(t), freePort(t)}
	w := start(t, "witness", nil, "store", "--data", dir, "--cluster-listen", addrs[2], "--cluster-route", addrs[0], "--cluster-route", addrs[1])

	membertest.OpenMembers(t, ca, addrs, 2) // two edges' stores; addrs[2] is the witness's
	w.waitLog(t, "witness joined the cluster", 1, 30*time.Second)

	clusterPort := portOf(t, addrs[2])
	var clientPort int
	for _, k := range socketsOf(t, w.Pid()) {
		switch {
		case !k.listening():
		case k.proto == "tcp" && k.localPort == clusterPort:
		case k.proto == "tcp" && strings.HasPrefix(k.localHex, "0100007F:") && clientPort == 0:
			clientPort = k.localPort // the loopback client port
		default:
			t.Errorf("the witness (pid %d) listens where it should not: %s", w.Pid(), k)
		}
	}
	if clientPort == 0 {
		t.Fatal("no loopback client port found: the inspection would not see a stray listener either")
	}
	// Another local user, without the token, gets nothing.
	if nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", clientPort), nats.Timeout(5*time.Second), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("a client without the witness's token connected to its NATS server")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("a client without the token: %v, want an authorization refusal", err)
	}

	w.signal(t, syscall.SIGTERM)
	if code := w.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("witness exit code %d after SIGTERM, want 0; stderr:\n%s", code, w.Stderr.String())
	}
	if w.Stderr.Count("witness stopping") != 1 {
		t.Errorf("the witness did not log that it stopped:\n%s", w.Stderr.String())
	}
}
