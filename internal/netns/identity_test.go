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

// TestConnectorRenewsOnline: with connector certificates that live 6s,
// the real connector renews its certificate again and again while a
// download crosses its tunnel; the download finishes intact, the connector
// killed and started again (its first certificate long expired) comes back
// as the same identity with the renewed one, and the audit trail read with
// the real CLI has the renewals.
func TestConnectorRenewsOnline(t *testing.T) {
	t.Parallel()
	s := newStack(t, "--connector-certificate-ttl", "6s")
	mark := s.Connector.Log.Mark()
	start := time.Now()
	d := slowDownload(t, s)
	s.Connector.Log.WaitForSince(t, mark, 20*time.Second, 2, "connector certificate renewed")
	renewedAfter := time.Since(start)
	got := d()
	if got.Took < renewedAfter-time.Second {
		t.Fatalf("the download took %v and ended before the second renewal (%v): it spans nothing", got.Took, renewedAfter)
	}
	if got.ExitCode != 0 || got.Bytes != int64(s.HTTP.HugeSize) || got.SHA256 != s.HTTP.HugeSHA256 {
		t.Fatalf("the download across the renewals: exit %d (%s), %d of %d bytes, sha256 %s (want %s)",
			got.ExitCode, got.Stderr, got.Bytes, s.HTTP.HugeSize, got.SHA256, s.HTTP.HugeSHA256)
	}
	s.Edge.Log.WaitFor(t, 5*time.Second, 2, "connector certificate renewed")

	before := connectorIDs(s.Edge.Log)
	s.Connector.Kill()
	s.RestartConnector(t)
	s.Connector.Log.WaitFor(t, 15*time.Second, 1, "tunnel up")
	s.Edge.Log.WaitFor(t, 10*time.Second, len(before)+1, "connector tunnel up")
	after := connectorIDs(s.Edge.Log)
	if after[len(after)-1] != before[0] {
		t.Errorf("the restarted connector came back as %s, not as %s", after[len(after)-1], before[0])
	}
	checkClients(t, s, "after renewals and a restart")
	audit := s.Topo.DMZ.Must(t, s.Bin, "audit", "--data", s.EdgeData)
	if n := strings.Count(audit, "renew"); n < 2 {
		t.Errorf("the audit trail has %d renewals, want 2 or more:\n%s", n, audit)
	}
}
