package main_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testnet"
)

// reloadSite is an edge run with a config file (and the flags of
// startEdge) and a connector that offers a, b, c and d, each to an echo
// back-end; ports holds a free loopback address for each service.
type reloadSite struct {
	edge  *proc
	data  string
	conf  string
	ports map[string]string
	conn  *proc
}

// startReloadSite writes the config of services (YAML lines under
// "services:", with PORT_x for service x's address), starts the edge on
// it and a connector, and waits until the edge routes every service the
// config names through the connector.
func startReloadSite(t *testing.T, services string) *reloadSite {
	t.Helper()
	dir := t.TempDir()
	s := &reloadSite{data: filepath.Join(dir, "edge"), conf: filepath.Join(dir, "edge.yaml"), ports: map[string]string{}}
	for _, n := range []string{"a", "b", "c", "d"} {
		s.ports[n] = freePort(t)
	}
	s.write(t, services)
	s.edge = start(t, "edge", nil, "edge", "--config", s.conf, "--data", s.data, "--tunnel-listen", freePort(t), "--admin-listen", freePort(t))
	s.edge.waitLog(t, `msg="edge started"`, 1, 20*time.Second)
	kf := filepath.Join(dir, "site.keyfile")
	mustRun(t, "token", "create", "--name", "site", "--service", "a", "--service", "b", "--service", "c", "--service", "d", "-o", kf, "--data", s.data)
	echo := testnet.Echo(t)
	args := []string{"--keyfile", kf, "--data", filepath.Join(dir, "connector")}
	for _, n := range []string{"a", "b", "c", "d"} {
		args = append(args, "--service", n+"="+echo.Addr())
	}
	s.conn = startConnector(t, args...)
	e := &edgeProc{data: s.data}
	for _, n := range []string{"a", "b", "c", "d"} {
		if strings.Contains(services, "  "+n+":") {
			e.waitTunnels(t, n, 1, 10*time.Second)
		}
	}
	return s
}

// write replaces the config file: drain_timeout 3s and services.
func (s *reloadSite) write(t *testing.T, services string) {
	t.Helper()
	s.writeRaw(t, "drain_timeout: 3s\nservices:\n"+services)
}

// writeRaw replaces the config file with text, PORT_x replaced.
func (s *reloadSite) writeRaw(t *testing.T, text string) {
	t.Helper()
	for n, a := range s.ports {
		text = strings.ReplaceAll(text, "PORT_"+n, a)
	}
	if err := os.WriteFile(s.conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload runs `sallyport reload` and returns its exit code and output.
func (s *reloadSite) reload(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return sallyport(t, append([]string{"reload", "--data", s.data}, args...)...)
}

// refusesConnections fails the test unless nothing listens at addr.
func refusesConnections(t *testing.T, addr, what string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s: %s accepts connections", what, addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s: dial %s: %v, want connection refused", what, addr, err)
	}
}

// SIGHUP with a config that adds b, changes a's policy and removes c: a's
// live connection goes on with every byte, b works, a's new clients meet
// its new policy, c's port is closed at once while c's live connection
// goes on, and it is cut off at the drain timeout.
func TestEdgeSIGHUPReloadKeepsLiveConnections(t *testing.T) {
	s := startReloadSite(t, "  a: {listen: PORT_a}\n  c: {listen: PORT_c}\n")
	liveA := dialClient(t, s.ports["a"])
	liveC := dialClient(t, s.ports["c"])
	big := string(payload(32 << 10))
	roundTrip(t, liveA, big)
	roundTrip(t, liveC, "c before the reload")

	s.write(t, "  a: {listen: PORT_a, policy: {deny: [127.0.0.0/8]}}\n  b: {listen: PORT_b}\n")
	s.edge.signal(t, syscall.SIGHUP)
	s.edge.waitLog(t, `msg="config reloaded"`, 1, 10*time.Second)
	reloaded := time.Now()
	if n := s.edge.Stderr.Count("services added: b; services removed: c; services changed: a; listeners added: service b " + s.ports["b"] + "; listeners removed: service c " + s.ports["c"]); n != 1 {
		t.Errorf("the reload's log line does not say what changed:\n%s", s.edge.Stderr.String())
	}

	roundTrip(t, liveA, big)
	echoes(t, s.ports["b"], payload(64<<10))
	if err := tryEcho(s.ports["a"], []byte("a new client from a denied address")); err == nil {
		t.Error("a new client to a got through its new policy, which denies 127.0.0.0/8")
	}
	refusesConnections(t, s.ports["c"], "removed service c")
	roundTrip(t, liveC, "c after the reload, within the drain")

	// c's live connection is cut off at the drain timeout (3s).
	liveC.SetDeadline(time.Now().Add(15 * time.Second))
	_, err := io.ReadAll(liveC)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("c's live connection still open 15s after the reload; its drain timeout is 3s")
	}
	if d := time.Since(reloaded); d < 2*time.Second {
		t.Errorf("c's live connection was cut %s after the reload, before its drain timeout (3s)", d)
	}
	s.edge.waitLog(t, "removed listener: drain timeout, closing client connections still open", 1, 5*time.Second)
	roundTrip(t, liveA, "a goes on after c is gone")
	if s.edge.Exited() {
		t.Fatalf("the edge exited: %s", s.edge.State())
	}
}

// A config with any problem is refused as a whole, by `sallyport reload`
// (exit 1, the problem at its file and line) and by SIGHUP (logged the
// same way): the running config stays, the old listener serves, no new
// one is opened, and a good config after it is taken.
func TestEdgeReloadRefusesBadConfig(t *testing.T) {
	s := startReloadSite(t, "  a: {listen: PORT_a}\n")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	s.ports["taken"] = taken.Addr().String()
	tests := []struct {
		name, file string
		want       []string // in the refusal; FILE is the config's path
	}{
		{"syntax", "services:\n  a: {listen: PORT_a}\n  d: {listen: PORT_d\n", []string{"FILE:3: invalid YAML"}},
		{"unknown key", "services:\n  a: {listen: PORT_a}\n  d: {listen: PORT_d}\ntunnel:\n  keepalive_intervall: 5s\n",
			[]string{"FILE:5: tunnel.keepalive_intervall: unknown key"}},
		{"certificate file missing", "listeners:\n  - kind: https\n    listen: PORT_d\n    certificates: [{cert: /nonexistent/site.crt, key: /nonexistent/site.key}]\nservices:\n  a: {listen: PORT_a}\n  w: {hosts: [w.test]}\n",
			[]string{"FILE:4: listeners[0].certificates:", "/nonexistent/site.crt"}},
		{"port taken", "services:\n  a: {listen: PORT_a}\n  b: {listen: PORT_d}\n  c: {listen: PORT_taken}\n",
			[]string{"FILE:4: services.c.listen:", s.ports["taken"], "address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.writeRaw(t, tt.file)
			code, out, errOut := s.reload(t)
			if code != 1 {
				t.Fatalf("sallyport reload: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			for _, w := range append(tt.want, "reload refused; the running config stays") {
				if w = strings.ReplaceAll(w, "FILE", s.conf); !strings.Contains(errOut, w) {
					t.Errorf("the refusal does not say %q:\n%s", w, errOut)
				}
			}
			echoes(t, s.ports["a"], []byte("the old listener still serves"))
			refusesConnections(t, s.ports["d"], "a listener of the refused config")
		})
	}

	// SIGHUP: the same refusal, in the log.
	s.writeRaw(t, tests[1].file)
	s.edge.signal(t, syscall.SIGHUP)
	s.edge.waitLog(t, `msg="config reload refused; the running config stays" by="signal SIGHUP"`, 1, 10*time.Second)
	if s.edge.Stderr.Count(s.conf+":5: tunnel.keepalive_intervall: unknown key") == 0 {
		t.Errorf("the log does not name the problem at its file and line:\n%s", s.edge.Stderr.String())
	}
	echoes(t, s.ports["a"], []byte("still serving after a refused SIGHUP"))
	refusesConnections(t, s.ports["d"], "a listener of the refused config")

	// A good config is taken after the refusals.
	s.write(t, "  a: {listen: PORT_a}\n  d: {listen: PORT_d}\n")
	if code, out, errOut := s.reload(t); code != 0 || !strings.Contains(out, "services added: d") {
		t.Fatalf("sallyport reload of a good config: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	echoes(t, s.ports["d"], []byte("the added service"))
}

// `sallyport reload` prints what changed and exits 0; settings only a
// restart changes are named with their file and line, and keep their
// running values; with --json it prints the result as JSON.
func TestReloadCommandOutput(t *testing.T) {
	s := startReloadSite(t, "  a: {listen: PORT_a}\n")
	code, out, errOut := s.reload(t)
	if code != 0 || strings.TrimSpace(out) != "reloaded: nothing changed" {
		t.Fatalf("reload of the same config: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	s.writeRaw(t, "drain_timeout: 3s\nlimits:\n  max_clients: 1000\nservices:\n  a: {listen: PORT_a}\n  b: {listen: PORT_b}\n")
	code, out, errOut = s.reload(t)
	for _, w := range []string{"reloaded\n", "services added: b", "listeners added: service b " + s.ports["b"],
		fmt.Sprintf("needs a restart: %s:3: limits.max_clients: changed, but only a restart puts it in force", s.conf)} {
		if !strings.Contains(out, w) {
			t.Errorf("reload output does not say %q:\n%s", w, out)
		}
	}
	if code != 0 {
		t.Fatalf("exit %d, want 0: a restart-only change is no error\nstderr:\n%s", code, errOut)
	}
	s.edge.waitLog(t, "a setting needs a restart", 1, 5*time.Second)
	echoes(t, s.ports["b"], []byte("b is served"))

	s.writeRaw(t, "drain_timeout: 3s\nservices:\n  b: {listen: PORT_b}\n")
	code, out, _ = s.reload(t, "--json")
	if code != 0 || !strings.Contains(out, `"services_removed": [`) || !strings.Contains(out, `"changed": true`) {
		t.Errorf("reload --json: exit %d\n%s", code, out)
	}

	// Each reload is in the audit trail, a refused one with its reason.
	s.writeRaw(t, "services:\n  b: {listen: PORT_b, polcy: {}}\n")
	if code, _, _ := s.reload(t); code != 1 {
		t.Fatalf("a bad config: exit %d, want 1", code)
	}
	audit := mustRun(t, "audit", "--data", s.data)
	if n := strings.Count(audit, "config.reload"); n != 4 {
		t.Errorf("%d reloads in the audit trail, want 4:\n%s", n, audit)
	}
	if !strings.Contains(audit, "services.b.polcy: unknown key") || !strings.Contains(audit, "services added: b") {
		t.Errorf("the audit trail does not say what the reloads did:\n%s", audit)
	}
}

// SIGHUP to the connector with a config that removes c and adds b: c's
// live stream goes on, a new client of c is refused, b works, and the
// older tunnel, which the edge routes no new client to (a new client of
// a goes by the new one), closes once c's stream is done, well before
// the drain timeout.
func TestConnectorSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	s := &reloadSite{data: filepath.Join(dir, "edge"), conf: filepath.Join(dir, "edge.yaml"), ports: map[string]string{}}
	for _, n := range []string{"a", "b", "c"} {
		s.ports[n] = freePort(t)
	}
	s.write(t, "  a: {listen: PORT_a}\n  b: {listen: PORT_b}\n  c: {listen: PORT_c}\n")
	s.edge = start(t, "edge", nil, "edge", "--config", s.conf, "--data", s.data, "--tunnel-listen", freePort(t), "--admin-listen", freePort(t))
	s.edge.waitLog(t, `msg="edge started"`, 1, 20*time.Second)
	kf := filepath.Join(dir, "site.keyfile")
	mustRun(t, "token", "create", "--name", "site", "--service", "a", "--service", "b", "--service", "c", "-o", kf, "--data", s.data)
	echo := testnet.Echo(t)
	connConf := filepath.Join(dir, "connector.yaml")
	writeConn := func(services ...string) {
		text := "drain_timeout: 30s\nservices:\n"
		for _, n := range services {
			text += fmt.Sprintf("  %s: {address: %q}\n", n, echo.Addr())
		}
		if err := os.WriteFile(connConf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConn("a", "c")
	conn := startConnector(t, "--config", connConf, "--keyfile", kf, "--data", filepath.Join(dir, "connector"))
	e := &edgeProc{data: s.data}
	e.waitTunnels(t, "c", 1, 10*time.Second)

	liveC := dialClient(t, s.ports["c"])
	roundTrip(t, liveC, string(payload(16<<10)))

	// A bad config is refused whole, at its file and line.
	if err := os.WriteFile(connConf, []byte("services:\n  a: {address: "+echo.Addr()+"}\n  b: {adress: "+echo.Addr()+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn.signal(t, syscall.SIGHUP)
	conn.waitLog(t, `msg="config reload refused; the running config stays"`, 1, 10*time.Second)
	if conn.Stderr.Count(connConf+":3: services.b.adress: unknown key") != 1 {
		t.Errorf("the connector's refusal does not name the problem at its file and line:\n%s", conn.Stderr.String())
	}
	echoes(t, s.ports["c"], []byte("c still served after the refused reload"))

	writeConn("a", "b")
	conn.signal(t, syscall.SIGHUP)
	conn.waitLog(t, `msg="config reloaded"`, 1, 10*time.Second)
	if conn.Stderr.Count(`services_added=[b] services_removed=[c]`) != 1 {
		t.Errorf("the connector's reload line does not say what changed:\n%s", conn.Stderr.String())
	}
	e.waitTunnels(t, "b", 1, 10*time.Second)
	echoes(t, s.ports["b"], payload(32<<10))
	if err := tryEcho(s.ports["c"], []byte("a new client of the removed back-end")); err == nil {
		t.Error("a new client reached c's back-end after the connector's config removed it")
	}
	roundTrip(t, liveC, "c's live stream after the reload")

	// Three new clients of a: were the older tunnel still routed, one
	// would go by it (the edge spreads streams over the least loaded).
	var liveA []net.Conn
	for i := range 3 {
		c := dialClient(t, s.ports["a"])
		roundTrip(t, c, fmt.Sprintf("new client %d of a", i))
		liveA = append(liveA, c)
	}
	liveC.Close()
	// The older tunnel carried c's stream only: it closes now, not at the
	// drain timeout (30s).
	conn.waitLog(t, "older tunnel closed; the new one carries the services", 1, 10*time.Second)
	for i, c := range liveA {
		roundTrip(t, c, fmt.Sprintf("client %d of a after the older tunnel closed", i))
	}
	if n := conn.Stderr.Count("drain timeout"); n != 0 {
		t.Errorf("the older tunnel waited out the drain timeout:\n%s", conn.Stderr.String())
	}
}
