//go:build linux

package netns_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/childproc"
	"github.com/sallyport/sallyport/internal/netns"
)

// TestConnectorRevoked: the operator revokes the connector with the real
// CLI in the DMZ; a download in flight through it ends within a second,
// the connector's reconnect is refused and it exits saying why, and new
// clients are turned away at once.
func TestConnectorRevoked(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	d := slowDownload(t, s)
	s.Topo.DMZ.Must(t, s.Bin, "connectors", "revoke", "trusted-site", "--data", s.EdgeData)
	revoked := time.Now()
	s.Edge.Log.WaitFor(t, 5*time.Second, 1, "connector revoked: its tunnel is closed")
	cut := time.Since(revoked)
	got := d()
	if got.ExitCode == 0 {
		t.Fatalf("the download went on to the end although its connector was revoked")
	}
	if cut > time.Second {
		t.Errorf("the edge closed the revoked connector's tunnel %v after the revocation; want within a second", cut)
	}
	if err := s.Connector.Wait(20 * time.Second); errors.Is(err, childproc.ErrStillRunning) {
		t.Fatalf("the revoked connector still runs 20s later:\n%s", s.Connector.Log.Tail(20))
	}
	if code := s.Connector.ExitCode(); code == 0 {
		t.Errorf("the revoked connector exited 0")
	}
	if !strings.Contains(s.Connector.Log.String(), "revoked at") {
		t.Errorf("the revoked connector's log does not say why:\n%s", s.Connector.Log.Tail(20))
	}
	s.Edge.Log.WaitFor(t, 5*time.Second, 1, "tunnel refused: connector revoked")
	after, err := s.Curl(10*time.Second, netns.WebURL("/hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if after.ExitCode != 52 && after.ExitCode != 56 {
		t.Errorf("after the revocation curl exited %d (%s); want it turned away", after.ExitCode, after.Stderr)
	}
	audit := s.Topo.DMZ.Must(t, s.Bin, "audit", "--data", s.EdgeData)
	if !strings.Contains(audit, "revoke") || !strings.Contains(audit, "refused: revoked") {
		t.Errorf("the audit trail lacks the revocation or the refused hello:\n%s", audit)
	}
}
