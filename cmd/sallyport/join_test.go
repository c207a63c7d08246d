package main_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's way to add an edge: a join keyfile from the first edge,
// then `sallyport edge --join` on the new one, which runs with the first
// edge's CA; run again with the used keyfile it just starts.
func TestEdgeJoinByFlags(t *testing.T) {
	dataA := filepath.Join(t.TempDir(), "edge-a")
	advertiseA := freePort(t)
	a := startEdge(t, dataA, nil, "--cluster-listen", advertiseA, "--cluster-advertise", advertiseA)

	if code, _, errOut := sallyport(t, "edges", "join-token", "--ttl", "48h", "--data", dataA, "-o", filepath.Join(t.TempDir(), "x")); code == 0 ||
		!strings.Contains(errOut, "up to 24h") {
		t.Errorf("a 48h join keyfile: exit %d, %s", code, errOut)
	}
	path := filepath.Join(t.TempDir(), "edge-b.join")
	out := mustRun(t, "edges", "join-token", "--data", dataA, "-o", path)
	if !strings.Contains(out, "wrote "+path) || !strings.Contains(out, "power of the cluster's CA key") || !strings.Contains(out, "sallyport edge --join "+path) {
		t.Errorf("join-token says:\n%s", out)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("join keyfile: %v, %v; want mode 0600", fi, err)
	}

	dataB := filepath.Join(t.TempDir(), "edge-b")
	if code, _, errOut := sallyport(t, "edge", "--data", dataB, "--join", path, "--tunnel-listen", freePort(t), "--admin-listen", freePort(t)); code == 0 ||
		!strings.Contains(errOut, "--cluster-listen") {
		t.Errorf("--join without a cluster port: exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dataB, "pki", "ca.crt")); err == nil {
		t.Error("a refused --join wrote a CA")
	}
	advertiseB := freePort(t)
	b := startEdge(t, dataB, nil, "--join", path, "--cluster-listen", advertiseB, "--cluster-advertise", advertiseB)
	caA, _ := os.ReadFile(filepath.Join(dataA, "pki", "ca.crt"))
	caB, _ := os.ReadFile(filepath.Join(dataB, "pki", "ca.crt"))
	if len(caA) == 0 || !bytes.Equal(caA, caB) {
		t.Error("the joined edge does not run with the first edge's CA")
	}
	routes, _ := os.ReadFile(filepath.Join(dataB, "cluster.json"))
	if !strings.Contains(string(routes), advertiseA) {
		t.Errorf("cluster.json = %s; want the first edge's cluster address %s", routes, advertiseA)
	}
	// The first edge, a single node until now, starts again as a member
	// once the new one's cluster port answers.
	a.waitLog(t, "restarts to make its store a cluster member", 1, 30*time.Second)
	a.waitLog(t, "edge started", 2, 60*time.Second)
	if list := mustRun(t, "token", "list", "--data", dataA); !strings.Contains(list, "join-edge") || !strings.Contains(list, "used") {
		t.Errorf("token list:\n%s", list)
	}
	// The two make one store, which holds what the first edge wrote
	// alone.
	if list := mustRun(t, "token", "list", "--data", dataB); !strings.Contains(list, "join-edge") {
		t.Errorf("token list at the joined edge does not show the first edge's join token:\n%s", list)
	}
	for _, data := range []string{dataA, dataB} {
		if st := mustRun(t, "status", "--data", data); !strings.Contains(st, "store cluster: 2 servers, 2 online") {
			t.Errorf("status of %s:\n%s", data, st)
		}
	}

	b.signal(t, syscall.SIGTERM)
	b.wait(t, 20*time.Second)
	b.restart(t) // the same flags, --join with the used keyfile included
	a.signal(t, syscall.SIGTERM)
	a.wait(t, 20*time.Second)
}
