package testnet_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/health"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
)

// probe GETs path at addr, with the bearer token if given, and returns the
// status and body; a connection error is status 0 and the error's text.
func probe(t *testing.T, addr, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// wantProbe fails unless path at addr answers status with exactly body.
func wantProbe(t *testing.T, addr, path string, status int, body string) {
	t.Helper()
	if s, b := probe(t, addr, path, ""); s != status || b != body {
		t.Fatalf("GET %s at %s: %d %q, want %d %q", path, addr, s, b, status, body)
	}
}

// eventuallyProbe waits up to timeout for path at addr to answer status
// with body.
func eventuallyProbe(t *testing.T, timeout time.Duration, addr, path string, status int, body string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, b := probe(t, addr, path, "")
		if s == status && b == body {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s at %s: still %d %q after %s, want %d %q", path, addr, s, b, timeout, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The probes answer without the token on the admin listener, on the
// socket and on admin.health_listen, and say "ok" and nothing else; the
// rest of the API still wants the token, and the health listener serves
// nothing but the probes, even with the token.
func TestEdgeProbes(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{
		Expose: map[string]string{"echo": ""},
		Tune:   func(c *config.Edge) { c.Admin.HealthListen = "127.0.0.1:0" },
	})
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	adminAddr, healthAddr := e.AdminAddr().String(), e.HealthAddr().String()
	id := e.Status(t.Context()).EdgeID
	for _, addr := range []string{adminAddr, healthAddr} {
		wantProbe(t, addr, "/livez", http.StatusOK, "ok\n")
		wantProbe(t, addr, "/readyz", http.StatusOK, "ok\n")
	}
	sock := &admin.Client{Socket: filepath.Join(e.Cfg.DataDir, admin.SocketFile)}
	for _, p := range []string{health.LivePath, health.ReadyPath} {
		if err := sock.Probe(t.Context(), p); err != nil {
			t.Fatalf("%s over the socket: %v", p, err)
		}
	}

	// The attacker on the admin port, without the token.
	for _, path := range []string{"/v1/status", "/v1/connectors", "/v1/tokens", "/readyz/../v1/status", "/livez?x=/v1/status"} {
		s, b := probe(t, adminAddr, path, "")
		if strings.Contains(b, id) || strings.Contains(b, "echo") {
			t.Fatalf("GET %s without the token revealed the edge's id or services: %q", path, b)
		}
		if s == http.StatusOK && b != "ok\n" {
			t.Fatalf("GET %s without the token: %d %q", path, s, b)
		}
	}
	if s, _ := probe(t, adminAddr, "/v1/status", ""); s != http.StatusUnauthorized {
		t.Fatalf("/v1/status without the token: %d, want 401", s)
	}
	if s, b := probe(t, adminAddr, "/v1/status", token); s != http.StatusOK || !strings.Contains(b, id) {
		t.Fatalf("/v1/status with the token: %d %q", s, b)
	}
	// The health listener is no way into the API, token or not.
	for _, path := range []string{"/v1/status", "/v1/tokens", "/"} {
		if s, b := probe(t, healthAddr, path, token); s != http.StatusNotFound || strings.Contains(b, id) {
			t.Fatalf("GET %s on the health listener with the token: %d %q, want 404", path, s, b)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+healthAddr+"/v1/tokens", strings.NewReader(`{"name":"x"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode == http.StatusCreated {
		t.Fatalf("POST /v1/tokens on the health listener: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Probes are not audited (a balancer asks every few seconds); the
	// refused call is.
	var probes, refused int
	err = e.AdminClient(t).Audit(t.Context(), time.Time{}, false, func(ev store.AuditEvent) error {
		s := fmt.Sprint(ev)
		if strings.Contains(s, "livez") || strings.Contains(s, "readyz") {
			probes++
		}
		if strings.Contains(s, "/v1/status") && strings.Contains(s, "401") {
			refused++
		}
		return nil
	})
	if err != nil || probes != 0 || refused == 0 {
		t.Fatalf("audit trail: %d probe events (want 0), %d refused status calls (want some), %v", probes, refused, err)
	}
}

// While it drains after the stop, the edge's /readyz says "draining" (the
// balancer takes it out) and /livez stays ok; once stopped, nothing
// listens.
func TestEdgeReadyzDraining(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}, DrainTimeout: 20 * time.Second})
	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, e.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	conn.WaitTunnels(t, 1)
	echoThrough(t, e)
	client := e.Dial(t, "echo") // holds the drain open
	client.SetDeadline(time.Now().Add(30 * time.Second))
	got := make([]byte, 2)
	if _, err := client.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "hi" {
		t.Fatalf("echo: %q %v", got, err)
	}
	addr := e.AdminAddr().String()
	wantProbe(t, addr, "/readyz", http.StatusOK, "ok\n")

	stopped := make(chan error, 1)
	go func() { stopped <- e.Stop() }()
	eventuallyProbe(t, 5*time.Second, addr, "/readyz", http.StatusServiceUnavailable, "draining\n")
	wantProbe(t, addr, "/livez", http.StatusOK, "ok\n")
	client.Close()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the edge did not stop once its last client left")
	}
	if s, _ := probe(t, addr, "/livez", ""); s != 0 {
		t.Fatalf("a stopped edge's /livez answered %d", s)
	}
}

// An edge that loses its shared store is fenced and must not be ready:
// the balancer's probe is what takes it out. It is ready again once the
// store is back.
func TestEdgeReadyzFenced(t *testing.T) {
	cl := &cluster{t: t, nats: startNATS(t)}
	e := cl.startEdge()
	addr := e.AdminAddr().String()
	wantProbe(t, addr, "/readyz", http.StatusOK, "ok\n")
	cl.nats.stop()
	eventuallyProbe(t, 5*time.Second, addr, "/readyz", http.StatusServiceUnavailable, "fenced: lost its store\n")
	wantProbe(t, addr, "/livez", http.StatusOK, "ok\n")
	cl.nats.start()
	eventuallyProbe(t, 15*time.Second, addr, "/readyz", http.StatusOK, "ok\n")
}

// The connector's probes listen only where health.listen says: ready
// with a tunnel up, not without; gone when it stops.
func TestConnectorProbes(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	echo := testnet.Echo(t)
	kf := e.Keyfile(t, "site", time.Hour, "echo")
	conn := testnet.StartConnector(t, kf, testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()},
		Tune:     func(c *config.Connector) { c.Health.Listen = "127.0.0.1:0" },
	})
	conn.WaitTunnels(t, 1)
	a := conn.HealthAddr()
	if a == nil {
		t.Fatal("no health listener")
	}
	addr := a.String()
	wantProbe(t, addr, "/readyz", http.StatusOK, "ok\n")
	wantProbe(t, addr, "/livez", http.StatusOK, "ok\n")
	if s, _ := probe(t, addr, "/", ""); s != http.StatusNotFound {
		t.Fatalf("GET / on the connector's probes: %d, want 404", s)
	}
	e.Stop()
	eventuallyProbe(t, 10*time.Second, addr, "/readyz", http.StatusServiceUnavailable, "no tunnel up\n")
	wantProbe(t, addr, "/livez", http.StatusOK, "ok\n")
	conn.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the stopped connector's probe port still accepts")
	}
}

// A connector without health.listen and metrics.listen listens nowhere:
// no probes, no metrics.
func TestConnectorListensNowhereByDefault(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	conn := testnet.StartConnector(t, e.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{Services: map[string]string{"echo": testnet.Echo(t).Addr()}})
	conn.WaitTunnels(t, 1)
	if a := conn.HealthAddr(); a != nil {
		t.Fatalf("health listener at %s without health.listen", a)
	}
	if a := conn.MetricsAddr(); a != nil {
		t.Fatalf("metrics listener at %s without metrics.listen", a)
	}
}

// The connector says READY=1 to systemd once it is enrolled and dialling
// (whether or not a tunnel is up yet) and STOPPING=1 when it stops.
func TestConnectorNotifiesSystemd(t *testing.T) {
	sd := listenNotify(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	if got := readNotify(t, sd); got != "READY=1" { // the edge's
		t.Fatalf("edge's first notification %q", got)
	}
	conn := testnet.StartConnector(t, e.Keyfile(t, "site", time.Hour, "echo"), testnet.ConnectorOptions{Services: map[string]string{"echo": testnet.Echo(t).Addr()}})
	if got := readNotify(t, sd); got != "READY=1" {
		t.Fatalf("connector's first notification %q, want READY=1", got)
	}
	conn.Stop()
	if got := readNotify(t, sd); got != "STOPPING=1" {
		t.Fatalf("connector's notification at stop %q, want STOPPING=1", got)
	}
}

// listenNotify plays systemd: a datagram socket named by $NOTIFY_SOCKET
// for the rest of the test.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	sd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sd.Close(); os.Remove(path) })
	t.Setenv("NOTIFY_SOCKET", path)
	return sd
}

// readNotify returns the next notification sd receives.
func readNotify(t *testing.T, sd *net.UnixConn) string {
	t.Helper()
	sd.SetReadDeadline(time.Now().Add(20 * time.Second))
	b := make([]byte, 256)
	n, err := sd.Read(b)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(b[:n])
}

// With $NOTIFY_SOCKET set, as systemd sets it for Type=notify, the edge
// says READY=1 once it is ready and STOPPING=1 when it stops; the test's
// own datagram socket plays systemd.
func TestEdgeNotifiesSystemd(t *testing.T) {
	sd := listenNotify(t)
	read := func() string { t.Helper(); return readNotify(t, sd) }
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	if got := read(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	if err := e.Readiness(); err != nil {
		t.Fatalf("READY=1 sent while /readyz says %v", err)
	}
	e.Stop()
	if got := read(); got != "STOPPING=1" {
		t.Fatalf("notification at stop %q, want STOPPING=1", got)
	}
}
