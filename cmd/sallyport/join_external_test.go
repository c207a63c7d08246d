package main_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/store/storetest"
)

// Two edges on one external NATS (store.url in their config files): the
// second joins the first with `sallyport edge --join`, with no cluster
// port, runs with the first edge's CA, and sees the same store.
func TestEdgeJoinOnExternalStore(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(cfg, []byte("store:\n  url: "+storetest.StartNATS(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataA := filepath.Join(t.TempDir(), "edge-a")
	startEdge(t, dataA, nil, "--config", cfg)
	path := filepath.Join(t.TempDir(), "edge-b.join")
	if out := mustRun(t, "edges", "join-token", "--data", dataA, "-o", path); !strings.Contains(out, "edges on an external NATS: --config with the same store section") {
		t.Errorf("join-token does not say how an edge on an external NATS joins:\n%s", out)
	}

	dataB := filepath.Join(t.TempDir(), "edge-b")
	startEdge(t, dataB, nil, "--config", cfg, "--join", path)
	caA, _ := os.ReadFile(filepath.Join(dataA, "pki", "ca.crt"))
	caB, _ := os.ReadFile(filepath.Join(dataB, "pki", "ca.crt"))
	if len(caA) == 0 || !bytes.Equal(caA, caB) {
		t.Error("the joined edge does not run with the first edge's CA")
	}
	if _, err := os.Stat(filepath.Join(dataB, "pki", "ca.key")); err != nil {
		t.Errorf("the joined edge has no CA key: %v", err)
	}
	// The joined edge lists the first edge's join token, used by it.
	if list := mustRun(t, "token", "list", "--data", dataB); !strings.Contains(list, "join-edge") || !strings.Contains(list, "used") {
		t.Errorf("token list at the joined edge:\n%s", list)
	}
}
