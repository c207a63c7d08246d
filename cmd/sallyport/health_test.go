package main_test

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `sallyport health` is the exec probe of an image without curl: exit 0
// and "ok" when ready, exit 1 and the reason otherwise; for the edge by
// its data directory, for a connector by --url at its --health-listen.
func TestHealthCommandExitCodes(t *testing.T) {
	connHealth := freePort(t)
	s := startSite(t, nil, "--health-listen", connHealth)
	want := func(code int, out string, args ...string) {
		t.Helper()
		c, o, e := sallyport(t, append([]string{"health"}, args...)...)
		if c != code || !strings.HasPrefix(o, out) || strings.Count(o, "\n") != 1 {
			t.Fatalf("sallyport health %s: exit %d, stdout %q, stderr %q; want exit %d and one line starting %q", strings.Join(args, " "), c, o, e, code, out)
		}
	}
	want(0, "ok\n", "--data", s.edge.data)
	want(0, "ok\n", "--live", "--data", s.edge.data)
	want(0, "ok\n", "--url", "http://"+connHealth)
	want(1, "not ok: ", "--data", filepath.Join(t.TempDir(), "no-edge"))
	want(1, "not ok: ", "--url", "http://"+freePort(t))
	if c, _, e := sallyport(t, "health", "--url", "http://"+connHealth+"/v1/status"); c != 1 || !strings.Contains(e, "use http://HOST:PORT") {
		t.Fatalf("health --url with a path: exit %d, stderr %q", c, e)
	}

	// The edge stops: the connector has no tunnel and says so; the
	// edge's probe finds nothing to ask.
	s.edge.signal(t, syscall.SIGTERM)
	if code := s.edge.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("edge exit %d", code)
	}
	want(1, "not ok: ", "--data", s.edge.data)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, o, _ := sallyport(t, "health", "--url", "http://"+connHealth)
		if c == 1 && o == "not ok: no tunnel up (503)\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connector's health without an edge: exit %d, %q", c, o)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want(0, "ok\n", "--live", "--url", "http://"+connHealth)
}

// The connector's probes stay on loopback unless the operator allows
// otherwise.
func TestConnectorHealthListenLoopbackOnly(t *testing.T) {
	c, _, e := sallyport(t, "connector", "--data", t.TempDir(), "--service", "echo=127.0.0.1:7", "--health-listen", "0.0.0.0:0")
	if c != 1 || !strings.Contains(e, "health.listen") || !strings.Contains(e, "loopback") {
		t.Fatalf("connector --health-listen 0.0.0.0:0: exit %d, stderr %q", c, e)
	}
}
