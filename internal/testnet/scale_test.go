package testnet_test

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store/storetest"
	"github.com/sallyport/sallyport/internal/testnet"
)

// scaleEnv names the number of connectors TestScaleManyConnectors runs;
// unset, the test is skipped (it takes minutes and most of the machine).
// perSourceEnv, if set, is the edges' tunnel.openings_per_source: every
// connector here dials from 127.0.0.1, as a site behind one NAT would.
const (
	scaleEnv     = "SALLYPORT_SCALE_CONNECTORS"
	perSourceEnv = "SALLYPORT_SCALE_OPENINGS_PER_SOURCE"
)

// TestScaleManyConnectors checks the shape of docs/cluster.md's figures
// (§2, §9, §11) on one machine: N connectors, each with its own data
// directory and identity, enrolled with its own one-time token, keep a
// tunnel to each of three edges that share one external NATS server and
// one CA. It logs per edge: tunnels; for the process: heap and
// goroutines per tunnel; the time for all tunnels to come up; the time a
// revocation made at edge A takes to close the connector's tunnels at B
// and C; and the return herd when edge C restarts (handshakes a second
// it sees). Run it with
//
//	SALLYPORT_SCALE_CONNECTORS=300 go test -count=1 -v -timeout 20m \
//		-run TestScaleManyConnectors ./internal/testnet/
//
// Connectors use the production keepalive (5 s / 15 s) and backoff
// (250 ms doubling to 30 s), so the herd has the shape of §6's.
func TestScaleManyConnectors(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(scaleEnv))
	if n <= 0 || testing.Short() {
		t.Skipf("set %s to the number of connectors to run this measurement", scaleEnv)
	}
	perSource, _ := strconv.Atoi(os.Getenv(perSourceEnv))
	url := storetest.StartNATS(t)
	echo := testnet.Echo(t)
	tune := func(c *config.Edge) {
		c.Store.URL = url
		c.Tunnel.OpeningsPerSource = perSource // 0: the default
	}
	keepalive := func(o *testnet.EdgeOptions) {
		o.KeepaliveInterval, o.KeepaliveTimeout = 5*time.Second, 15*time.Second
	}
	var edges []*testnet.Edge
	var caDir string
	for i := range 3 {
		dir := filepath.Join(t.TempDir(), "edge")
		if i > 0 {
			shareCA(t, caDir, filepath.Join(dir, "pki"))
		}
		o := testnet.EdgeOptions{DataDir: dir, Expose: map[string]string{"echo": ""},
			Tune: tune}
		keepalive(&o)
		edges = append(edges, testnet.StartEdge(t, o))
		caDir = filepath.Join(edges[0].Cfg.DataDir, "pki")
	}
	var addrs []string
	for _, e := range edges {
		addrs = append(addrs, e.TunnelAddr().String())
	}
	a, b, c := edges[0], edges[1], edges[2]

	restHeap, restG := heapAndGoroutines()
	keyfiles := make([]string, n)
	for i := range keyfiles {
		keyfiles[i] = a.Keyfile(t, "site-"+strconv.Itoa(i), time.Hour, "echo")
	}
	start := time.Now()
	var connectors []*testnet.Connector
	for i := range n {
		c := testnet.StartConnector(t, keyfiles[i], testnet.ConnectorOptions{
			Services: map[string]string{"echo": echo.Addr()}, Edges: addrs,
			KeepaliveInterval: 5 * time.Second, KeepaliveTimeout: 15 * time.Second,
			BackoffMin: 250 * time.Millisecond, BackoffMax: 30 * time.Second,
		})
		connectors = append(connectors, c)
	}
	for _, e := range edges {
		if !waitTunnels(e, n, 3*time.Minute) {
			for i, c := range connectors {
				if c.Tunnels() < 3 {
					t.Errorf("connector site-%d holds %d tunnels; its log ends:\n%s", i, c.Tunnels(), c.Logs.Tail(30))
				}
			}
			t.Logf("where the connectors' enrollments wait:\n%s", stacksWith("connector.(*Connector).enroll"))
			t.Fatalf("%d tunnels at the edge after 3 minutes, want %d", len(e.Status(context.Background()).Connectors), n)
		}
	}
	upIn := time.Since(start)
	heap, g := heapAndGoroutines()
	tunnels := 3 * n
	t.Logf("%d connectors x 3 edges: %d tunnels up in %s (%.0f handshakes/s over the three edges, enrollment included)",
		n, tunnels, upIn.Round(time.Millisecond), float64(tunnels)/upIn.Seconds())
	for i, e := range edges {
		t.Logf("edge %c: %d tunnels; %d openings shed at the bounds (openings_per_source %d)",
			'A'+i, len(e.Status(context.Background()).Connectors), shed(e), cmp.Or(perSource, config.DefaultOpeningsPerSource))
	}
	t.Logf("per tunnel (both ends, in one process): %.1f KiB heap, %.2f goroutines; per connector: %.1f KiB, %.1f goroutines",
		float64(heap-restHeap)/float64(tunnels)/1024, float64(g-restG)/float64(tunnels),
		float64(heap-restHeap)/float64(n)/1024, float64(g-restG)/float64(n))

	// Clients reach the service through every edge.
	for _, e := range edges {
		echoOnce(t, e)
	}

	// A revocation at A closes the connector's tunnels at B and C.
	revokeAt := time.Now()
	if _, err := a.RevokeConnector(context.Background(), "site-0"); err != nil {
		t.Fatalf("revoke site-0 at edge A: %v", err)
	}
	for i, e := range []*testnet.Edge{b, c} {
		deadline := time.Now().Add(10 * time.Second)
		for tunnelsNamed(e, "site-0") > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("edge %c still holds site-0's tunnel 10s after its revocation at A", 'B'+i)
			}
			time.Sleep(time.Millisecond)
		}
		t.Logf("revocation at A: site-0's tunnel closed at edge %c after %s", 'B'+i, time.Since(revokeAt).Round(100*time.Microsecond))
	}

	// The return herd: C stops (its tunnels close), is down a moment, and
	// comes back on the same port; the live connectors all return.
	dir, port := c.Cfg.DataDir, c.TunnelAddr().String()
	if err := c.Stop(); err != nil {
		t.Fatalf("stop edge C: %v", err)
	}
	down := time.Now()
	o := testnet.EdgeOptions{DataDir: dir, TunnelListen: port, Expose: map[string]string{"echo": ""},
		Tune: tune}
	keepalive(&o)
	c = testnet.StartEdge(t, o)
	back := time.Now()
	counts := herd(t, c, n-1, 5*time.Minute)
	peak := 0
	for _, k := range counts {
		peak = max(peak, k)
	}
	t.Logf("edge C restarted after %s down: %d tunnels back in %s after it listened, %d openings shed; peak %d handshakes in 100 ms; per 100 ms: %v",
		back.Sub(down).Round(time.Millisecond), n-1, (time.Duration(len(counts)) * 100 * time.Millisecond), shed(c), peak, counts)
}

// shareCA copies the CA certificate and key from one edge's pki directory
// into another's before it starts: both edges then trust and are trusted
// by the same connectors.
func shareCA(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{pki.CACertFile, pki.CAKeyFile} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// heapAndGoroutines returns the heap in use after two collections and
// the number of goroutines.
func heapAndGoroutines() (int64, int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse), runtime.NumGoroutine()
}

// waitTunnels waits until e holds n tunnels, and reports whether it did
// within timeout.
func waitTunnels(e *testnet.Edge, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for len(e.Status(context.Background()).Connectors) < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// tunnelsNamed counts e's tunnels from the connector named name.
func tunnelsNamed(e *testnet.Edge, name string) int {
	k := 0
	for _, c := range e.Status(context.Background()).Connectors {
		if c.Name == name {
			k++
		}
	}
	return k
}

// herd samples e's tunnels every 100 ms until it holds n, and returns
// how many came up in each 100 ms.
func herd(t *testing.T, e *testnet.Edge, n int, timeout time.Duration) []int {
	t.Helper()
	var counts []int
	deadline := time.Now().Add(timeout)
	last := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for last < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tunnels back after %s", last, n, timeout)
		}
		<-tick.C
		now := len(e.Status(context.Background()).Connectors)
		counts = append(counts, now-last)
		last = now
	}
	return counts
}

// shed counts the tunnel-port openings e shed at its bounds, from its log
// lines (each counts those it did not log).
func shed(e *testnet.Edge) int {
	n := 0
	for _, line := range e.Logs.Lines("too many connections in their opening") {
		n++
		if _, after, ok := strings.Cut(line, "more_closed_unlogged="); ok {
			k, _ := strconv.Atoi(strings.Fields(after)[0])
			n += k
		}
	}
	return n
}

// stacksWith returns the stacks of the goroutines whose stack holds fn.
func stacksWith(fn string) string {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
