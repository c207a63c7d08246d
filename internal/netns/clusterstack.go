//go:build linux

package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ClusterServices are the services of a ClusterStack: each edge exposes
// them on the same public ports, and both connectors offer them.
var ClusterServices = []string{"web", "redis"}

// FencedLine is what an edge logs when it stops serving because it can no
// longer reach its store.
const FencedLine = "fenced"

// ClusterPublicPorts are the ports the balancer spreads.
var ClusterPublicPorts = []int{WebPort, RedisPort}

// ClusterStack is a whole cluster deployment with the real binary: edges
// in the DMZ that form one NATS cluster through their cluster ports (the
// first one alone, the others joined with join keyfiles it made),
// clients behind the balancer, and two connectors in trusted offering the
// same services (replicas), each enrolled at the first edge with a
// keyfile that names that edge only: the others they learn from the
// cluster.
type ClusterStack struct {
	Topo  *ClusterTopology
	Bin   string
	HTTP  *HTTPServer
	Redis *Redis

	EdgeData   []string // each edge's data directory
	Edges      []*Process
	Connectors []*Process
	Witness    *Process
	started    []*Process
	edgeArgs   [][]string // each edge's command line, for restarts
}

// NewClusterStack builds a cluster of edges edges (and a witness if
// witness) with two connectors, and waits until every connector has a
// tunnel to every edge.
func NewClusterStack(t testing.TB, bin string, edges int, witness bool) *ClusterStack {
	t.Helper()
	SkipIfMissing(t, Missing(BackendTools...))
	s := &ClusterStack{Topo: NewCluster(t, edges, witness, TunnelPort, ClusterPublicPorts), Bin: bin}
	s.HTTP = StartHTTP(t, s.Topo.Trusted, BackendHTTPPort, BigFileSize, HugeFileSize)
	s.Redis = StartRedis(t, s.Topo.Trusted, BackendRedisPort)
	for i := range edges {
		s.EdgeData = append(s.EdgeData, t.TempDir())
		var join []string
		if i > 0 {
			join = []string{"--join", s.JoinKeyfile(t, 0, "edge")}
		}
		s.edgeArgs = append(s.edgeArgs, s.edgeCommand(t, i))
		s.Edges = append(s.Edges, s.startEdge(t, i, join...))
		if i == 1 {
			// The first edge, a single node until the first join,
			// starts again as a member.
			s.Edges[0].Log.WaitFor(t, 60*time.Second, 2, "edge started")
		}
	}
	if witness {
		data := t.TempDir()
		s.Witness = s.Topo.Witness.Start(t, "witness", s.Bin, "store", "--data", data,
			"--join", s.JoinKeyfile(t, 0, "witness"),
			"--cluster-listen", ":"+strconv.Itoa(ClusterPort),
			"--cluster-advertise", net.JoinHostPort(ClusterWitnessAddr, strconv.Itoa(ClusterPort)),
			"--log-level", "debug")
		s.started = append(s.started, s.Witness)
		s.Witness.Log.WaitFor(t, 60*time.Second, 1, "witness joined the cluster")
	}
	for i := range 2 {
		s.Connectors = append(s.Connectors, s.EnrollConnector(t, "site-"+strconv.Itoa(i+1)))
	}
	for _, c := range s.Connectors {
		s.WaitTunnels(t, c, edges)
	}
	return s
}

// edgeCommand is edge i's command line, without --join.
func (s *ClusterStack) edgeCommand(t testing.TB, i int) []string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "edge.yaml")
	writeFile(t, cfg, []byte(fmt.Sprintf(`cluster:
  listen: ":%d"
  advertise: "%s"
`, ClusterPort, net.JoinHostPort(EdgeAddr(i), strconv.Itoa(ClusterPort)))), 0o600)
	return []string{s.Bin, "edge",
		"--config", cfg,
		"--data", s.EdgeData[i],
		"--tunnel-listen", ":" + strconv.Itoa(TunnelPort),
		"--advertise", net.JoinHostPort(EdgeAddr(i), strconv.Itoa(TunnelPort)),
		"--expose", fmt.Sprintf("web=:%d", WebPort),
		"--expose", fmt.Sprintf("redis=:%d", RedisPort),
		"--keepalive-interval", KeepaliveInterval.String(),
		"--keepalive-timeout", KeepaliveTimeout.String(),
		"--drain-timeout", "2s",
		"--log-level", "debug"}
}

// startEdge starts edge i with extra flags and waits until it serves.
func (s *ClusterStack) startEdge(t testing.TB, i int, extra ...string) *Process {
	t.Helper()
	p := s.Topo.Edges[i].Start(t, "edge"+strconv.Itoa(i), append(s.edgeArgs[i], extra...)...)
	s.started = append(s.started, p)
	p.Log.WaitFor(t, 60*time.Second, 1, "edge started")
	return p
}

// RestartEdge starts edge i again on its data directory, once the old
// process has ended, and waits until it serves.
func (s *ClusterStack) RestartEdge(t testing.TB, i int) {
	t.Helper()
	s.Edges[i].waitEnded(t)
	s.Edges[i] = s.startEdge(t, i)
}

// StopEdge stops edge i as its service manager would (SIGTERM) and waits
// until it has ended.
func (s *ClusterStack) StopEdge(t testing.TB, i int) {
	t.Helper()
	s.Edges[i].Signal(syscall.SIGTERM)
	s.Edges[i].waitEndedWithin(t, 30*time.Second)
}

// JoinKeyfile makes a join keyfile of role (edge or witness) on edge i and
// returns the path of its copy for the joining host (mode 0600).
func (s *ClusterStack) JoinKeyfile(t testing.TB, i int, role string) string {
	t.Helper()
	out := filepath.Join(s.EdgeData[i], "join-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".keyfile")
	args := []string{s.Bin, "edges", "join-token", "--data", s.EdgeData[i], "-o", out}
	if role == "witness" {
		args = append(args, "--witness")
	}
	s.Topo.Edges[i].Must(t, args...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "join.keyfile")
	writeFile(t, copyPath, b, 0o600)
	return copyPath
}

// CreateKeyfile runs `sallyport token create` on edge i for a connector
// named name, granted ClusterServices, and returns the keyfile.
func (s *ClusterStack) CreateKeyfile(t testing.TB, i int, name string) []byte {
	t.Helper()
	b, err := s.TryCreateKeyfile(i, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TryCreateKeyfile is CreateKeyfile that returns its error.
func (s *ClusterStack) TryCreateKeyfile(i int, name string) ([]byte, error) {
	return createKeyfile(s.Topo.Edges[i], s.Bin, s.EdgeData[i], name, nil, ClusterServices)
}

// createKeyfile runs `sallyport token create` (bin, with extra flags) in
// ns on the edge data directory dir, for a connector named name granted
// services, and returns the keyfile.
func createKeyfile(ns *Namespace, bin, dir, name string, extra, services []string) ([]byte, error) {
	out := filepath.Join(dir, name+".keyfile")
	args := append([]string{bin, "token", "create", "--data", dir, "--name", name, "--ttl", "10m", "-o", out}, extra...)
	for _, svc := range services {
		args = append(args, "--service", svc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ns.Run(ctx, args...); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// EnrollConnector starts a connector in trusted, enrolled with a keyfile
// made on edge 0, offering ClusterServices.
func (s *ClusterStack) EnrollConnector(t testing.TB, name string) *Process {
	t.Helper()
	keyfile := filepath.Join(t.TempDir(), name+".keyfile")
	writeFile(t, keyfile, s.CreateKeyfile(t, 0, name), 0o600)
	return s.StartConnector(t, name, keyfile)
}

// StartConnector starts a connector in trusted on a new data directory
// with keyfile, offering ClusterServices; extra flags follow.
func (s *ClusterStack) StartConnector(t testing.TB, name, keyfile string, extra ...string) *Process {
	t.Helper()
	// A newly announced edge is dialled within half a second (not the
	// default spread of 30 s, which keeps a herd off a new edge).
	cfg := filepath.Join(t.TempDir(), "connector.yaml")
	writeFile(t, cfg, []byte("tunnel:\n  join_spread: 500ms\n  leave_grace: 5s\n"), 0o600)
	p := s.Topo.Trusted.Start(t, name, append([]string{s.Bin, "connector",
		"--config", cfg,
		"--data", t.TempDir(),
		"--keyfile", keyfile,
		"--service", fmt.Sprintf("web=127.0.0.1:%d", BackendHTTPPort),
		"--service", fmt.Sprintf("redis=127.0.0.1:%d", BackendRedisPort),
		"--keepalive-interval", KeepaliveInterval.String(),
		"--keepalive-timeout", KeepaliveTimeout.String(),
		"--backoff-max", BackoffMax.String(),
		"--drain-timeout", "2s",
		"--log-level", "debug"}, extra...)...)
	s.started = append(s.started, p)
	return p
}

// WaitTunnels waits until connector c has said "tunnel up" for n
// distinct edges.
func (s *ClusterStack) WaitTunnels(t testing.TB, c *Process, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		up := map[string]bool{}
		for _, line := range c.Log.Lines("tunnel up") {
			for _, f := range strings.Fields(line) {
				if a, ok := strings.CutPrefix(f, "edge="); ok {
					up[a] = true
				}
			}
		}
		if len(up) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has tunnels to %d edges, want %d, after 60s:\n%s", c.Name, len(up), n, c.Log.Tail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Status runs `sallyport status` on edge i and returns what it prints.
func (s *ClusterStack) Status(t testing.TB, i int) string {
	t.Helper()
	return s.Topo.Edges[i].Must(t, s.Bin, "status", "--data", s.EdgeData[i])
}

// Sallyports returns every sallyport process the stack started.
func (s *ClusterStack) Sallyports() []*Process { return s.started }

// Get fetches path of service web through the balancer, once, within
// timeout, and returns the body.
func (s *ClusterStack) Get(timeout time.Duration, path string) (string, error) {
	return s.GetFrom(timeout, ClusterVIP, path)
}

// GetFrom fetches path of service web from the public port at host.
func (s *ClusterStack) GetFrom(timeout time.Duration, host, path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(WebPort)) + path
	return s.Topo.Outside.Run(ctx, "curl", "-sS", "--fail", "--max-time", strconv.FormatFloat(timeout.Seconds(), 'f', 1, 64), url)
}

// CheckHello fetches /hello.txt through the balancer, retrying a failed
// try at once as a client with a retry policy does, up to tries times,
// and reports the last error if none succeeded.
func (s *ClusterStack) CheckHello(tries int) error {
	var err error
	for range tries {
		var got string
		if got, err = s.Get(3*time.Second, "/hello.txt"); err == nil {
			if got != s.HTTP.Hello {
				return fmt.Errorf("got %q, want %q", got, s.HTTP.Hello)
			}
			return nil
		}
	}
	return fmt.Errorf("%d tries: %w", tries, err)
}
