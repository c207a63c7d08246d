//go:build linux

package netns_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/netns"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// loggedOnce waits for the edge's log line, written after mark, about one
// connection (match: its "remote" field on the tunnel port; its "client"
// and "service" fields on a public port, since a client port may be
// reused towards another port), checks that there is exactly one and that
// it says want, and returns it.
func loggedOnce(t *testing.T, s *netns.Stack, probe *netns.Probe, mark int, want string, match ...string) string {
	t.Helper()
	s.Edge.Log.WaitForSince(t, mark, 15*time.Second, 1, match...)
	logBarrier(t, s, probe)
	lines := s.Edge.Log.LinesSince(mark, match...)
	if len(lines) != 1 {
		t.Errorf("the edge logged %d lines about %q; want 1:\n%s", len(lines), match, strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[0], want) {
		t.Errorf("the edge's line about %q does not say %q:\n%s", match, want, lines[0])
	}
	t.Logf("logged once: %s", lines[0])
	return lines[0]
}

// logBarrier makes the edge write one more line, about a tunnel that the
// test's probe connector opens now, and waits until that line is in the
// edge's log. The edge writes its log through one pipe, in order, so every
// line it wrote before that one is in the log by then. It is the positive
// signal that a second line about an earlier connection would have
// arrived: the edge writes a connection's lines from the one goroutine
// that serves it, one after the other, while the barrier needs a new
// connection accepted and its tunnel admitted after the first line was
// seen. (Not a stranger's failed handshake: those lines are rate-limited,
// and a bad-input test writes many.) The tunnel offers nothing, so that
// no client of the tests is routed to it while it closes.
func logBarrier(t *testing.T, s *netns.Stack, probe *netns.Probe) {
	t.Helper()
	tc := s.DialTunnelPort(t, probe.TLSConfig())
	sess, _, err := tunnel.Client(context.Background(), tc, wire.Hello{Instance: "barrier"},
		tunnel.Config{KeepaliveInterval: netns.KeepaliveInterval, KeepaliveTimeout: netns.KeepaliveTimeout})
	if err != nil {
		t.Fatalf("log barrier: tunnel session: %v", err)
	}
	defer sess.Close()
	s.Edge.Log.WaitFor(t, 10*time.Second, 1, "connector tunnel up", remote(tc))
}

// remote matches the edge's lines about a tunnel-port connection.
func remote(c net.Conn) string { return logbuf.Field("remote", c.LocalAddr().String()) }

// client matches the edge's lines about a client of a public service.
func client(c net.Conn, service string) []string {
	return []string{logbuf.Field("client", c.LocalAddr().String()), logbuf.Field("service", service)}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	if b[0] == 0x16 { // would look like the start of a TLS record
		b[0] = 0x17
	}
	return b
}

// TestBadInput aims hostile bytes from outside at the edge's tunnel port
// and public ports. Each is refused and logged once, and a legitimate
// client is served all along.
func TestBadInput(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	probe := s.EnrollProbe(t, "probe")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var runs int
	var errs []error
	wg.Go(func() { runs, errs = netns.KeepServing(stop, 250*time.Millisecond, 400, s.CheckHello) })
	stopped := false
	stopServing := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopServing()

	t.Run("random bytes at the tunnel port", func(t *testing.T) {
		mark := s.Edge.Log.Mark()
		c, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(netns.TunnelPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		c.Write(randomBytes(64 << 10)) // the edge may close before it has all
		if _, err := netns.ReadUntilClosed(c, 10*time.Second); isTimeout(err) {
			t.Errorf("the edge kept a connection of random bytes open: %v", err)
		}
		loggedOnce(t, s, probe, mark, "TLS handshake failed", remote(c))
	})

	for _, svc := range []struct {
		name string
		port int
	}{{"web", netns.WebPort}, {"redis", netns.RedisPort}, {"ssh", netns.SSHPort}} {
		t.Run("random bytes at the public port of "+svc.name, func(t *testing.T) {
			// A tcp service carries bytes as they are: the back-end judges
			// them, and the edge logs the connection once.
			mark := s.Edge.Log.Mark()
			c, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(svc.port), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			c.Write(randomBytes(64 << 10))
			c.(*net.TCPConn).CloseWrite()
			n, err := netns.ReadUntilClosed(c, 15*time.Second)
			if isTimeout(err) {
				t.Errorf("the connection of random bytes to %s was still open after 15s", svc.name)
			}
			loggedOnce(t, s, probe, mark, "client connection closed", client(c, svc.name)...)
			t.Logf("%s answered %d bytes and closed (%v)", svc.name, n, err)
		})
	}

	t.Run("TLS without a client certificate at the tunnel port", func(t *testing.T) {
		mark := s.Edge.Log.Mark()
		tc := s.DialTunnelPort(t, pki.EnrollTLSConfig(probe.Pin, nil))
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		err := tunnel.Preambles(tc)
		if err == nil {
			if err = wire.WriteMessage(tc, wire.KindHello, wire.Hello{Instance: "nocert", Services: []string{"web"}}); err == nil {
				var w wire.Welcome
				err = wire.ReadExpect(tc, wire.KindWelcome, &w)
			}
		}
		var ref *wire.Refusal
		if !errors.As(err, &ref) || ref.Code != wire.CodeNotEnrolled {
			t.Errorf("a Hello without a client certificate got %v; want a refusal (not enrolled)", err)
		}
		loggedOnce(t, s, probe, mark, "no client certificate", remote(tc))
	})

	t.Run("TLS ClientHello at a public port", func(t *testing.T) {
		// The web port carries TCP to an HTTP server: the ClientHello
		// reaches it, and it never answers a ServerHello.
		mark := s.Edge.Log.Mark()
		raw, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(netns.WebPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		err = tc.Handshake()
		raw.Close()
		if err == nil {
			t.Errorf("a TLS handshake succeeded on the plain web port")
		}
		loggedOnce(t, s, probe, mark, "client connection closed", client(raw, "web")...)
	})

	t.Run("client certificate of another CA", func(t *testing.T) {
		other := pkitest.NewCA(t)
		impostor, _ := pkitest.Connector(t, other, "impostor", time.Hour)
		impostor.Certificate = append(impostor.Certificate, other.Certificate().Raw)
		cfg := pki.ClientTLSConfig(probe.CA, probe.Pin, nil, nil)
		// Present it whatever CAs the edge says it accepts (Go's client
		// would otherwise send no certificate at all).
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &impostor, nil
		}
		mark := s.Edge.Log.Mark()
		raw, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(netns.TunnelPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		tc := tls.Client(raw, cfg)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		// In TLS 1.3 the client's handshake ends before the server has
		// judged its certificate: the refusal arrives on the first read.
		err = tc.Handshake()
		if err == nil {
			err = tunnel.Preambles(tc)
		}
		if err == nil {
			t.Errorf("the edge accepted a certificate of another CA")
		}
		loggedOnce(t, s, probe, mark, "TLS handshake failed", remote(raw))
	})

	t.Run("oversized opening message", func(t *testing.T) {
		mark := s.Edge.Log.Mark()
		tc := probe.Open(t)
		var h [5]byte
		h[0] = byte(wire.KindHello)
		binary.BigEndian.PutUint32(h[1:], wire.MaxMessage+1)
		tc.Write(h[:])
		if _, err := netns.ReadUntilClosed(tc, 10*time.Second); isTimeout(err) {
			t.Errorf("the edge kept the connection open after an oversized message: %v", err)
		}
		loggedOnce(t, s, probe, mark, "bad opening", remote(tc))
	})

	t.Run("malformed opening message", func(t *testing.T) {
		mark := s.Edge.Log.Mark()
		tc := probe.Open(t)
		tc.Write([]byte{0x7f, 0, 0, 0, 2, '{', '}'})
		if _, err := netns.ReadUntilClosed(tc, 10*time.Second); isTimeout(err) {
			t.Errorf("the edge kept the connection open after a malformed message: %v", err)
		}
		loggedOnce(t, s, probe, mark, "bad opening", remote(tc))
	})

	t.Run("malformed multiplexer frame after the handshake", func(t *testing.T) {
		mark := s.Edge.Log.Mark()
		tc := probe.Hello(t, "probe")
		tc.Write(netns.MuxHeader(0xff, netns.MuxTypeData, 0, 1, 16))
		if _, err := netns.ReadUntilClosed(tc, 15*time.Second); isTimeout(err) {
			t.Errorf("the edge kept the tunnel open after a malformed frame: %v", err)
		}
		loggedOnce(t, s, probe, mark, "tunnel failed during handshake", remote(tc))
	})

	t.Run("oversized multiplexer frame after the handshake", func(t *testing.T) {
		mark := s.Edge.Log.Mark()
		tc := probe.Hello(t, "probe")
		// Send the first frame the edge waits for (a ping's answer), so
		// that the tunnel is up...
		tc.Write(netns.MuxHeader(0, netns.MuxTypePing, netns.MuxFlagACK, 0, 0))
		s.Edge.Log.WaitForSince(t, mark, 10*time.Second, 1, "connector tunnel up", remote(tc))
		// ...then send a data frame far beyond the stream's window.
		tc.Write(netns.MuxHeader(0, netns.MuxTypeData, 0, 1, 64<<20))
		tc.Write(randomBytes(32 << 10))
		if _, err := netns.ReadUntilClosed(tc, 15*time.Second); isTimeout(err) {
			t.Errorf("the edge kept the tunnel open after an oversized frame: %v", err)
		}
		s.Edge.Log.WaitForSince(t, mark, 10*time.Second, 1, "connector tunnel down", remote(tc))
		logBarrier(t, s, probe)
		if lines := s.Edge.Log.LinesSince(mark, remote(tc)); len(lines) != 2 {
			t.Errorf("the edge logged %d lines about the probe's tunnel; want 2, up and down:\n%s", len(lines), strings.Join(lines, "\n"))
		}
	})

	t.Run("malformed stream reply", func(t *testing.T) {
		mark := s.Edge.Log.Mark()
		sess := probe.Session(t, "probe")
		s.Edge.Log.WaitForSince(t, mark, 10*time.Second, 1, "connector tunnel up", "instance=probe")
		replies := map[string][]byte{
			"unknown code":     {0xee, 0, 0},
			"oversized reason": {byte(wire.CodeBackendUnreachable), 0xff, 0xff},
		}
		// The probe answers every stream the edge opens with the current
		// malformed reply, until the subtest ends.
		var current atomic.Pointer[[]byte]
		var served sync.WaitGroup
		served.Go(func() {
			for {
				st, err := sess.Accept()
				if err != nil {
					return
				}
				reply := *current.Load()
				served.Go(func() {
					defer st.Close()
					st.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := st.ReadHeader(10 * time.Second); err != nil {
						t.Errorf("probe: read the stream header: %v", err)
						return
					}
					st.Write(reply)
					st.Write(randomBytes(4 << 10))
					io.Copy(io.Discard, st)
				})
			}
		})
		t.Cleanup(func() {
			sess.Close()
			served.Wait()
		})
		for what, reply := range replies {
			current.Store(&reply)
			// The edge answers a malformed reply by resetting the client,
			// about a millisecond after it connected: under load that
			// reset can arrive before the client's dial has returned, which
			// then fails with "connection reset by peer". The connection
			// was closed with nothing, as wanted; the edge's line about it
			// is the only one about the probe service since mark.
			mark := s.Edge.Log.Mark()
			c, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(netns.ProbePort), 5*time.Second)
			if errors.Is(err, syscall.ECONNRESET) {
				t.Logf("%s: the edge's reset arrived before the dial returned: %v", what, err)
				loggedOnce(t, s, probe, mark, "malformed", logbuf.Field("service", "probe"))
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			n, err := netns.ReadUntilClosed(c, 10*time.Second)
			c.Close()
			if isTimeout(err) && len(s.Edge.Log.LinesSince(mark, client(c, "probe")...)) == 0 {
				// Reported once with the early reset above, never seen
				// since: say so distinctly, for whoever meets it next.
				t.Fatalf("%s: the edge neither answered nor logged a client of the probe service in 10s (read %d bytes)", what, n)
			}
			if n != 0 || isTimeout(err) {
				t.Errorf("%s: the client read %d bytes (%v); want the connection closed with nothing", what, n, err)
			}
			loggedOnce(t, s, probe, mark, "malformed", client(c, "probe")...)
		}
	})

	t.Run("half-open handshake flood", func(t *testing.T) {
		// Several hundred SYNs that are never completed, at the tunnel
		// port and a public port; then connections that send nothing.
		s.Topo.Outside.HideFloodResets(t)
		defer s.Topo.Outside.RemoveFloodResets()
		for _, port := range []uint16{netns.TunnelPort, netns.WebPort} {
			dst := netip.AddrPortFrom(netip.MustParseAddr(netns.DMZOutsideAddr), port)
			if err := s.Topo.Outside.SendSYNs(dst, 300, time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CheckHello(); err != nil {
			t.Errorf("right after the SYN flood: %v", err)
		}
		const idle = 64
		mark := s.Edge.Log.Mark()
		var conns []net.Conn
		for range idle {
			c, err := s.Topo.Outside.DialTimeout(netns.PublicAddr(netns.TunnelPort), 5*time.Second)
			if err != nil {
				t.Fatalf("the tunnel port refused a connection during the flood: %v", err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
		// A connector enrolls and opens a tunnel while they hang.
		sess := probe.Session(t, "probe")
		sess.Close()
		// The edge gives each silent connection its first record's time,
		// then closes it and logs it at most once: a few lines a second
		// for the lot, not one each.
		closed := make(chan bool, len(conns))
		for _, c := range conns {
			go func() {
				_, err := netns.ReadUntilClosed(c, 20*time.Second)
				closed <- !isTimeout(err)
			}()
		}
		for range conns {
			if !<-closed {
				t.Fatal("the edge kept a silent tunnel-port connection for 20s")
			}
		}
		logBarrier(t, s, probe)
		logged := 0
		for _, c := range conns {
			lines := s.Edge.Log.LinesSince(mark, remote(c))
			if len(lines) > 1 || (len(lines) == 1 && !strings.Contains(lines[0], "TLS handshake failed")) {
				t.Errorf("the edge logged about a silent connection:\n%s\nwant at most one line saying the TLS handshake failed", strings.Join(lines, "\n"))
			}
			logged += len(lines)
		}
		if logged == 0 || logged == idle {
			t.Errorf("%d silent connections wrote %d lines; want some, and fewer than one each", idle, logged)
		}
		t.Logf("%d silent connections closed, %d lines logged about them", idle, logged)
		flooded := regexp.MustCompile(`(remote|client)=198\.18\.1\.2:1[0-9]{3} `)
		for _, line := range s.Edge.Log.Lines() {
			if flooded.MatchString(line + " ") {
				t.Errorf("the edge logged a half-open handshake, which it should never see: %s", line)
			}
		}
	})

	stopServing()
	if len(errs) > 0 || runs < 10 {
		t.Errorf("the legitimate client was served %d times out of %d during the bad input; failures: %v", runs-len(errs), runs, errs)
	}
	t.Logf("the legitimate client was served %d times out of %d during the bad input", runs-len(errs), runs)
	checkClients(t, s, "after the bad input")
	if lines := s.Connector.Log.Lines("tunnel down"); len(lines) > 0 {
		t.Errorf("the real connector's tunnel went down during the bad input: %v", lines)
	}
}

// isTimeout reports whether a read ended by its deadline, not by the peer.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
