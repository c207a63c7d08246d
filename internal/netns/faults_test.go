//go:build linux

package netns_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/netns"
)

// slowDownload starts a download of /huge.bin at 2 MB/s (16 s in all),
// waits until it is in flight (its first MiB has arrived) and returns a
// function that waits for its result.
func slowDownload(t *testing.T, s *netns.Stack) func() netns.Download {
	t.Helper()
	tr := s.StartCurl(t, 60*time.Second, netns.WebURL("/huge.bin"), "--limit-rate", "2M")
	// In flight: the first MiB has come through edge and tunnel.
	tr.WaitReceived(t, 1<<20, 15*time.Second)
	return func() netns.Download {
		d, err := tr.Wait()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
}

// checkClients asserts that new clients of every service are served.
func checkClients(t *testing.T, s *netns.Stack, when string) {
	t.Helper()
	if err := s.CheckHello(); err != nil {
		t.Errorf("%s: %v", when, err)
	}
	if err := s.CheckRedis("after", when); err != nil {
		t.Errorf("%s: %v", when, err)
	}
	if err := s.CheckSSH(); err != nil {
		t.Errorf("%s: %v", when, err)
	}
}

// connectorIDs returns the connector ids in the edge's "tunnel up" lines.
func connectorIDs(l *logbuf.Buffer) []string {
	var ids []string
	for _, line := range l.Lines("connector tunnel up") {
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "connector="); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// TestEdgeKilled: kill -9 of the edge during a transfer, then a restart.
// The connector must come back by itself within its backoff cap.
func TestEdgeKilled(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ups := s.Connector.Log.Count("tunnel up")
	wait := slowDownload(t, s)

	s.Edge.Kill()
	killed := time.Now()
	mark := s.Connector.Log.Mark()
	s.Connector.Log.WaitFor(t, 10*time.Second, 1, "tunnel down")
	t.Logf("the connector saw its tunnel go down %s after the kill", time.Since(killed).Round(time.Millisecond))
	d := wait()
	if d.ExitCode == 0 {
		t.Errorf("the download went on to the end (%d bytes) although the edge was killed under it", d.Bytes)
	}
	t.Logf("LOST: the download in flight, cut after %d of %d bytes (curl exit %d: %s)", d.Bytes, s.HTTP.HugeSize, d.ExitCode, d.Stderr)

	// The edge stays dead until the connector has failed to redial twice:
	// it is then in its backoff.
	s.Connector.Log.WaitForSince(t, mark, netns.BackoffMax+10*time.Second, 2, "tunnel dial failed")
	s.RestartEdge(t)
	ready := time.Now()
	s.Connector.Log.WaitFor(t, netns.BackoffMax+10*time.Second, ups+1, "tunnel up")
	back := time.Since(ready)
	t.Logf("the connector reconnected by itself %s after the new edge was serving (backoff cap %s)", back.Round(time.Millisecond), netns.BackoffMax)
	// Its redials wait at most the cap; then one dial and handshake.
	if limit := netns.BackoffMax + 2*time.Second; back > limit {
		t.Errorf("the connector took %s to reconnect to the restarted edge; its backoff cap is %s (allowed %s with the handshake)", back, netns.BackoffMax, limit)
	}
	checkClients(t, s, "after the edge was killed and restarted")
	if n := s.Edge.Log.Count("tunnel refused"); n > 0 {
		t.Errorf("the restarted edge refused the connector: %v", s.Edge.Log.Lines("tunnel refused"))
	}
}

// TestLinkSilentlyDropped: the dmz↔trusted link drops every packet for 20
// s without a FIN; the keepalives must find the dead tunnel and the
// connector must replace it once the link is back.
func TestLinkSilentlyDropped(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ups := s.Connector.Log.Count("tunnel up")
	edgeUps := s.Edge.Log.Count("connector tunnel up")
	wait := slowDownload(t, s)

	s.Topo.CutTrustedLink(t)
	cut := time.Now()
	detected := s.Connector.Log.WaitFor(t, netns.KeepaliveTimeout+5*time.Second, 1, "tunnel down")
	t.Logf("the connector declared the silent tunnel dead %s after the cut (keepalive %s, timeout %s)",
		detected.Round(time.Millisecond), netns.KeepaliveInterval, netns.KeepaliveTimeout)
	s.Edge.Log.WaitFor(t, netns.KeepaliveTimeout+5*time.Second, 1, "connector tunnel down")
	t.Logf("the edge declared it dead %s after the cut", time.Since(cut).Round(time.Millisecond))

	d := wait()
	if d.ExitCode == 0 {
		t.Errorf("the download completed (%d bytes) across a link that dropped every packet", d.Bytes)
	}
	t.Logf("LOST: the download in flight, cut after %d of %d bytes (curl exit %d: %s)", d.Bytes, s.HTTP.HugeSize, d.ExitCode, d.Stderr)

	// While the link is down, a new client is turned away at once.
	during, err := s.Curl(10*time.Second, netns.WebURL("/hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if during.ExitCode == 0 {
		t.Errorf("a client was served while trusted was cut off")
	}
	t.Logf("LOST: clients arriving during the outage are closed at once (curl exit %d: %s, after %s)",
		during.ExitCode, during.Stderr, during.Took.Round(time.Millisecond))

	time.Sleep(20*time.Second - time.Since(cut))
	s.Topo.RestoreTrustedLink(t)
	restored := time.Now()
	s.Connector.Log.WaitFor(t, 20*time.Second, ups+1, "tunnel up")
	s.Edge.Log.WaitFor(t, 5*time.Second, edgeUps+1, "connector tunnel up")
	t.Logf("the connector replaced the tunnel %s after the link came back", time.Since(restored).Round(time.Millisecond))
	checkClients(t, s, "after the link came back")
}

// TestConnectorKilled: the connector is killed (kill -9) during a transfer
// and started again on its data directory, without the keyfile.
func TestConnectorKilled(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	downs := s.Edge.Log.Count("connector tunnel down")
	wait := slowDownload(t, s)

	s.Connector.Kill()
	killed := time.Now()
	s.Edge.Log.WaitFor(t, 5*time.Second, downs+1, "connector tunnel down")
	t.Logf("the edge dropped the dead connector's tunnel %s after the kill", time.Since(killed).Round(time.Millisecond))
	d := wait()
	if d.ExitCode == 0 {
		t.Errorf("the download went on to the end although the connector was killed under it")
	}
	t.Logf("LOST: the download in flight, cut after %d of %d bytes (curl exit %d: %s)", d.Bytes, s.HTTP.HugeSize, d.ExitCode, d.Stderr)

	during, err := s.Curl(10*time.Second, netns.WebURL("/hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// The edge closes at once; it has not read the request, so the
	// kernel answers with a reset (curl exit 56) rather than a FIN.
	if during.ExitCode != 52 && during.ExitCode != 56 || during.Took > 5*time.Second {
		t.Errorf("with no connector, curl exited %d (%s) after %s; want it turned away at once", during.ExitCode, during.Stderr, during.Took)
	}
	s.Edge.Log.WaitFor(t, 5*time.Second, 1, "no connector offers the service")
	if n := s.Edge.Log.Count("no connector offers the service"); n != 1 {
		t.Errorf("the edge logged %d lines for the one client that found no connector; want 1", n)
	}
	t.Logf("LOST: clients arriving while no connector is up are closed at once (curl exit %d: %s)", during.ExitCode, during.Stderr)

	before := connectorIDs(s.Edge.Log)
	s.RestartConnector(t)
	s.Connector.Log.WaitFor(t, 15*time.Second, 1, "tunnel up")
	if n := s.Connector.Log.Count("connector enrolled"); n != 0 {
		t.Errorf("the restarted connector enrolled again instead of using its saved identity")
	}
	s.Edge.Log.WaitFor(t, 5*time.Second, len(before)+1, "connector tunnel up")
	after := connectorIDs(s.Edge.Log)
	if after[len(after)-1] != before[0] {
		t.Errorf("the restarted connector came back as %s, not as %s", after[len(after)-1], before[0])
	}
	checkClients(t, s, "after the connector was killed and restarted")
}

// TestBackendRefuses: a back-end that refuses connections; the client
// gets a clean close and the other services keep working.
func TestBackendRefuses(t *testing.T) {
	t.Parallel()
	s := newStack(t)

	// curl on the service whose back-end has nothing listening.
	d, err := s.Curl(10*time.Second, "http://"+netns.PublicAddr(netns.ClosedPort)+"/")
	if err != nil {
		t.Fatal(err)
	}
	if d.ExitCode != 52 {
		t.Errorf("curl to a refusing back-end exited %d (%s); want 52, an empty reply (a clean close, not a reset or a hang)", d.ExitCode, d.Stderr)
	}

	// A raw client: it reads end of stream, not a reset, and no bytes.
	c, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(netns.ClosedPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().String()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	c.Close()
	if err != nil || n != 0 {
		t.Errorf("a client of a refusing back-end read %d bytes and %v; want a clean end of stream", n, err)
	}
	s.Edge.Log.WaitFor(t, 5*time.Second, 1, "client refused by connector", logbuf.Field("client", local))
	if n := s.Edge.Log.Count(logbuf.Field("client", local)); n != 1 {
		t.Errorf("the edge logged %d lines for one refused client; want 1:\n%s", n, strings.Join(s.Edge.Log.Lines(logbuf.Field("client", local)), "\n"))
	}
	// The connector's log arrives through a pipe of its own: wait for it.
	s.Connector.Log.WaitFor(t, 5*time.Second, 2, "back-end unreachable")
	if n := s.Connector.Log.Count("back-end unreachable"); n != 2 {
		t.Errorf("the connector logged %d back-end refusals for 2 clients; want 2", n)
	}
	t.Log("LOST: nothing but the refused clients' connections, which end cleanly")

	// A real back-end that dies: redis-server is killed, its clients get a
	// clean close, and it is served again once it is back.
	s.Redis.Kill() // returns once it has ended
	out, err := s.RedisCLI("PING")
	if err == nil && out == "PONG" {
		t.Errorf("redis-cli got PONG from a killed redis-server")
	}
	if strings.Contains(strings.ToLower(fmt.Sprint(out, err)), "reset") {
		t.Errorf("redis-cli saw a reset, not a clean close: %q, %v", out, err)
	}
	t.Logf("LOST: redis clients while redis-server is down: redis-cli says %q (%v)", out, err)
	checkServed(t, s, "while redis-server is down", false)
	s.Redis.Process = s.Redis.Restart(t)
	netns.WaitListening(t, s.Topo.Trusted, net.JoinHostPort("127.0.0.1", strconv.Itoa(netns.BackendRedisPort)), s.Redis.Process)
	if err := s.CheckRedis("back", "again"); err != nil {
		t.Errorf("after redis-server came back: %v", err)
	}
	if n := s.Connector.Log.Count("tunnel down"); n != 0 {
		t.Errorf("a refusing back-end brought the tunnel down: %v", s.Connector.Log.Lines("tunnel down"))
	}
}

// checkServed asserts that web and ssh (and redis, if withRedis) are served.
func checkServed(t *testing.T, s *netns.Stack, when string, withRedis bool) {
	t.Helper()
	if err := s.CheckHello(); err != nil {
		t.Errorf("%s: %v", when, err)
	}
	if err := s.CheckSSH(); err != nil {
		t.Errorf("%s: %v", when, err)
	}
	if withRedis {
		if err := s.CheckRedis("served", when); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
}

// TestSlowReader: one client stops reading a large response while others
// stream through the same tunnel; the others complete, intact.
func TestSlowReader(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	const streams = 3
	run := func() (time.Duration, []error) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		start := time.Now()
		for range streams {
			wg.Go(func() {
				if _, err := s.CheckBig(90 * time.Second); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			out, err := s.Outside(90*time.Second, "redis-benchmark", "-h", netns.DMZOutsideAddr, "-p", "6379",
				"-n", "2000", "-c", "10", "-q", "-t", "set,get")
			if err != nil || strings.Contains(strings.ToLower(out), "error") {
				mu.Lock()
				errs = append(errs, errors.New("redis-benchmark: "+out))
				mu.Unlock()
			}
		})
		wg.Wait()
		return time.Since(start), errs
	}
	baseline, errs := run()
	if len(errs) > 0 {
		t.Fatalf("without a stalled client: %v", errs)
	}

	// The stalled client asks for /big.bin with a tiny receive buffer and
	// reads nothing.
	stalled, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(netns.WebPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(stalled, "GET /big.bin HTTP/1.0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Wait until the edge holds bytes it cannot deliver, the same amount
	// twice in a row: the stall has reached the tunnel.
	for prev, deadline := -1, time.Now().Add(15*time.Second); ; {
		q := edgeSendQueue(t, s, stalled.LocalAddr().String())
		if q > 0 && q == prev {
			t.Logf("the edge holds %d bytes it cannot deliver to the stalled client", q)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled client's response never piled up at the edge (send queue %d)", q)
		}
		prev = q
		time.Sleep(500 * time.Millisecond)
	}

	withStall, errs := run()
	for _, err := range errs {
		t.Errorf("while one client stalls: %v", err)
	}
	t.Logf("%d downloads of %d bytes and a redis-benchmark took %s without a stalled client, %s with one",
		streams, s.HTTP.BigSize, baseline.Round(time.Millisecond), withStall.Round(time.Millisecond))

	// The stalled client then reads its response, whole.
	stalled.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := io.ReadAll(stalled)
	if err != nil {
		t.Fatalf("the stalled client, reading at last: %v after %d bytes", err, len(resp))
	}
	_, body, ok := bytes.Cut(resp, []byte("\r\n\r\n"))
	sum := sha256.Sum256(body)
	if !ok || hex.EncodeToString(sum[:]) != s.HTTP.BigSHA256 {
		t.Errorf("the stalled client got %d body bytes that differ from /big.bin (%d bytes)", len(body), s.HTTP.BigSize)
	}
	t.Log("LOST: nothing; the stalled client gets its whole response once it reads")
}

// edgeSendQueue returns the bytes queued in the edge's socket to peer.
func edgeSendQueue(t *testing.T, s *netns.Stack, peer string) int {
	t.Helper()
	socks, err := s.Topo.DMZ.Sockets()
	if err != nil {
		t.Fatal(err)
	}
	for _, so := range socks {
		if so.Peer == peer && so.HeldBy(s.Edge.Pid()) {
			return so.SendQ
		}
	}
	return 0
}

// TestEdgeCrashLoop: the edge crashes right after each connector tunnel
// comes up, eight times, then stays up. With its default backoff cap (30
// s), the connector reconnects to the stable edge within about two
// seconds: every successful handshake started its backoff again (counted
// as failures, those short tunnels had it wait 6 to 13 s).
func TestEdgeCrashLoop(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.Connector.Kill()
	s.RestartConnector(t, "--backoff-max", "30s")
	s.Connector.Log.WaitFor(t, 15*time.Second, 1, "tunnel up")
	for i := 1; i <= 8; i++ {
		s.Edge.Kill()
		s.RestartEdge(t)
		s.Connector.Log.WaitFor(t, 40*time.Second, i+1, "tunnel up")
	}
	s.Edge.Kill()
	s.RestartEdge(t)
	ready := time.Now()
	s.Connector.Log.WaitFor(t, 40*time.Second, 10, "tunnel up")
	back := time.Since(ready)
	t.Logf("after eight crashes the connector reconnected %s after the stable edge was serving", back.Round(time.Millisecond))
	if back > 3*time.Second {
		t.Errorf("the connector took %s to reconnect to the stable edge after a crash loop; a successful handshake must reset its backoff (want about 2s)", back)
	}
	checkClients(t, s, "after the edge's crash loop")
}
