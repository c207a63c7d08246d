package main_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testnet"
)

// edgeProc is a running `sallyport edge` and the addresses it was given.
type edgeProc struct {
	*proc
	data, tunnel, admin string
	services            map[string]string // service name → public address
	extra               []string          // flags beyond the addresses, kept for restarts
}

// startEdge runs `sallyport edge` by flags on free loopback ports, exposing
// the named services, and waits until it logs that it has started. It picks
// new ports and tries again if another process took one in between.
func startEdge(t *testing.T, data string, services []string, extra ...string) *edgeProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		e := &edgeProc{data: data, tunnel: freePort(t), admin: freePort(t), services: map[string]string{}, extra: extra}
		for _, s := range services {
			e.services[s] = freePort(t)
		}
		err := e.run(t)
		if err == "" {
			return e
		}
		if !strings.Contains(err, "address already in use") || attempt == 5 {
			t.Fatalf("edge did not start: %s", err)
		}
	}
}

// restart runs a new edge process on the same data directory and ports.
func (e *edgeProc) restart(t *testing.T) {
	t.Helper()
	if err := e.run(t); err != "" {
		t.Fatalf("edge did not restart on the same ports: %s", err)
	}
}

// run starts the process; it returns "" once the edge has started, or its
// stderr if it exited first.
func (e *edgeProc) run(t *testing.T) string {
	t.Helper()
	args := []string{"edge", "--data", e.data, "--tunnel-listen", e.tunnel, "--admin-listen", e.admin}
	for name, addr := range e.services {
		args = append(args, "--expose", name+"="+addr)
	}
	args = append(args, e.extra...)
	e.proc = start(t, "edge", nil, args...)
	deadline := time.Now().Add(20 * time.Second)
	for e.Stderr.Count(`msg="edge started"`) == 0 {
		if e.Exited() {
			return e.State() + ": " + e.Stderr.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge has not started after 20s; stderr:\n%s", e.Stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ""
}

// keyfile runs `sallyport token create` the way the README shows it,
// granting the service echo, and returns the keyfile's path.
func (e *edgeProc) keyfile(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".keyfile")
	out := mustRun(t, "token", "create", "--name", name, "--service", "echo", "--ttl", "1h", "-o", path, "--data", e.data)
	if !strings.Contains(out, "wrote "+path) {
		t.Errorf("token create says %q; want it to name the keyfile it wrote", out)
	}
	return path
}

// status is what `sallyport status` shows.
type status struct {
	text       string
	tunnels    map[string]int // service → tunnels
	connectors []statusConnector
}

type statusConnector struct {
	name, id, via, services string
}

// status runs `sallyport status --data DIR` and reads its tables.
func (e *edgeProc) status(t *testing.T) status {
	t.Helper()
	out := mustRun(t, "status", "--data", e.data)
	st := status{text: out, tunnels: map[string]int{}}
	table := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0:
		case f[0] == "SERVICE" || f[0] == "CONNECTOR":
			table = f[0]
		case table == "SERVICE" && len(f) == 3:
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("status: bad tunnel count in %q", sc.Text())
			}
			st.tunnels[f[0]] = n
		case table == "CONNECTOR" && len(f) == 7:
			st.connectors = append(st.connectors, statusConnector{name: f[0], id: f[1], via: f[3], services: f[6]})
		}
	}
	return st
}

// waitTunnels polls `sallyport status` until service has n tunnels.
func (e *edgeProc) waitTunnels(t *testing.T, service string, n int, timeout time.Duration) status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := e.status(t)
		if st.tunnels[service] == n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s has %d tunnels after %s, want %d; status:\n%s", service, st.tunnels[service], timeout, n, st.text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startConnector runs `sallyport connector` with args and waits until its
// first tunnel is up.
func startConnector(t *testing.T, args ...string) *proc {
	t.Helper()
	c := start(t, "connector", nil, append([]string{"connector"}, args...)...)
	c.waitLog(t, `msg="tunnel up"`, 1, 20*time.Second)
	return c
}

// site is an edge exposing echo, with one enrolled connector carrying it
// to an echo back-end in the test process.
type site struct {
	edge      *edgeProc
	conn      *proc
	echo      *testnet.Backend
	connData  string
	keyfile   string
	connFlags []string
}

// startSite starts an edge and a connector by flags, as the README shows,
// and waits until the edge routes echo through the connector's tunnel.
func startSite(t *testing.T, edgeFlags []string, connFlags ...string) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{echo: testnet.Echo(t), connData: filepath.Join(dir, "connector")}
	s.edge = startEdge(t, filepath.Join(dir, "edge"), []string{"echo"}, edgeFlags...)
	s.keyfile = s.edge.keyfile(t, "site-a")
	s.connFlags = append([]string{"--data", s.connData, "--service", "echo=" + s.echo.Addr()}, connFlags...)
	s.conn = startConnector(t, append([]string{"--keyfile", s.keyfile}, s.connFlags...)...)
	s.edge.waitTunnels(t, "echo", 1, 10*time.Second)
	return s
}

// fileMode returns a file's permission bits.
func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
