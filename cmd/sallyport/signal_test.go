package main_test

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// SIGTERM to the edge: it stops taking new clients at once, lets a live
// client go on through the drain, and exits 0 as soon as that client is
// done, well before its --drain-timeout.
func TestEdgeSIGTERMDrainsThenExitsZero(t *testing.T) {
	s := startSite(t, []string{"--drain-timeout", "10s"})
	live := dialClient(t, s.edge.services["echo"])
	roundTrip(t, live, "before the signal")

	s.edge.signal(t, syscall.SIGTERM)
	s.edge.waitLog(t, "edge stopping", 1, 10*time.Second)
	// The listeners close right after that line is logged.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.edge.services["echo"], 2*time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the draining edge still accepts new clients 5s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	roundTrip(t, live, "during the drain")
	roundTrip(t, live, "still during the drain")
	if s.edge.Exited() {
		t.Fatalf("the edge exited (%s) while a client was still connected", s.edge.State())
	}
	live.Close()
	closed := time.Now()
	if code := s.edge.wait(t, 8*time.Second); code != 0 {
		t.Fatalf("edge exit code %d after SIGTERM, want 0; stderr:\n%s", code, s.edge.Stderr.String())
	}
	t.Logf("edge exited %s after its last client closed", time.Since(closed).Round(time.Millisecond))
	if s.edge.Stderr.Count("drain timeout") != 0 {
		t.Errorf("the edge waited out its drain timeout instead of ending when the client did:\n%s", s.edge.Stderr.String())
	}
	// The connector outlives its edge and keeps trying.
	s.conn.waitLog(t, `msg="tunnel down"`, 1, 10*time.Second)
	if s.conn.Exited() {
		t.Fatalf("the connector exited with the edge: %s", s.conn.State())
	}
}

// SIGTERM to the connector: new streams are refused, a live one goes on
// until its client is done, then the connector exits 0.
func TestConnectorSIGTERMDrainsThenExitsZero(t *testing.T) {
	s := startSite(t, nil, "--drain-timeout", "10s")
	live := dialClient(t, s.edge.services["echo"])
	roundTrip(t, live, "before the signal")

	s.conn.signal(t, syscall.SIGTERM)
	s.conn.waitLog(t, "connector stopping", 1, 10*time.Second)
	if err := tryEcho(s.edge.services["echo"], []byte("a new client")); err == nil {
		t.Error("a new client was carried by the draining connector")
	}
	roundTrip(t, live, "during the drain")
	if s.conn.Exited() {
		t.Fatalf("the connector exited (%s) while a stream was live", s.conn.State())
	}
	live.Close()
	if code := s.conn.wait(t, 8*time.Second); code != 0 {
		t.Fatalf("connector exit code %d after SIGTERM, want 0; stderr:\n%s", code, s.conn.Stderr.String())
	}
	if s.conn.Stderr.Count(`msg="connector stopped"`) != 1 {
		t.Errorf("the connector did not log that it stopped:\n%s", s.conn.Stderr.String())
	}
	s.edge.waitTunnels(t, "echo", 0, 10*time.Second)
}

// SIGTERM to an idle connector, and SIGINT (Ctrl-C) to an idle edge: both
// exit 0 promptly.
func TestIdleRolesExitZeroOnSignal(t *testing.T) {
	s := startSite(t, nil)
	s.conn.signal(t, syscall.SIGTERM)
	if code := s.conn.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("idle connector exit code %d after SIGTERM, want 0", code)
	}
	s.edge.signal(t, syscall.SIGINT)
	if code := s.edge.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("idle edge exit code %d after SIGINT, want 0", code)
	}
}

// dialClient connects to addr as a client; the connection is closed when
// the test ends.
func dialClient(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("client dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A second signal stops at once: the edge does not wait out its drain for
// a client that stays connected.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	s := startSite(t, []string{"--drain-timeout", "60s"})
	live := dialClient(t, s.edge.services["echo"])
	roundTrip(t, live, "before the signals")
	s.edge.signal(t, syscall.SIGTERM)
	s.edge.waitLog(t, "edge stopping", 1, 10*time.Second)
	roundTrip(t, live, "during the drain")
	s.edge.signal(t, syscall.SIGINT)
	s.edge.wait(t, 10*time.Second) // fails the test if it is still draining
	if s.edge.Stderr.Count("drain timeout") != 0 {
		t.Errorf("the edge waited out its drain after a second signal")
	}
}
