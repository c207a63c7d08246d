package testnet_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/connector"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// siteA starts an edge exposing echo, whose connector certificates live
// ttl (zero: the default), and connector site-a granted echo with its
// tunnel up; it returns the keyfile and options to start site-a again.
func siteA(t *testing.T, ttl time.Duration) (*testnet.Edge, string, testnet.ConnectorOptions, *testnet.Connector) {
	t.Helper()
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}, CertificateTTL: ttl})
	kf := e.Keyfile(t, "site-a", time.Hour, "echo")
	opts := testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}}
	c := testnet.StartConnector(t, kf, opts)
	c.WaitTunnels(t, 1)
	return e, kf, opts, c
}

// in returns o with its data directory set to dir: the same connector,
// started again.
func in(o testnet.ConnectorOptions, dir string) testnet.ConnectorOptions {
	o.DataDir = dir
	return o
}

// echoOnce checks that a client of echo is answered.
func echoOnce(t *testing.T, e *testnet.Edge) {
	t.Helper()
	conn := e.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("hello"))
	conn.CloseWrite()
	if b, err := io.ReadAll(conn); err != nil || string(b) != "hello" {
		t.Fatalf("echo answered %q, %v", b, err)
	}
}

// loadCert reads the connector certificate in a connector's data directory.
func loadCert(t *testing.T, dir string) (tls.Certificate, string) {
	t.Helper()
	cert, ca, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pki.PinOf(ca)
}

// audited returns the audit events of action, in order.
func audited(t *testing.T, e *testnet.Edge, action string) []store.AuditEvent {
	t.Helper()
	var out []store.AuditEvent
	err := e.ReadAudit(context.Background(), time.Time{}, false, func(ev store.AuditEvent) error {
		if ev.Action == action {
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A connector renews its certificate online, again and again, with a
// fresh key each time: a transfer that spans the renewals finishes
// intact on the tunnel made with the first certificate, and the connector
// started again (after that certificate has expired) comes back with the
// renewed one as the same identity, with the same grants.
func TestRenewalKeepsStreamsAndIdentity(t *testing.T) {
	e, kf, opts, c := siteA(t, 3*time.Second)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	first, _ := loadCert(t, c.Cfg.DataDir)
	id := pki.ConnectorID(first.Leaf)

	conn := e.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	before, after := make([]byte, 1<<20), make([]byte, 1<<20)
	rand.Read(before)
	rand.Read(after)
	echoed := func(b []byte) {
		t.Helper()
		errc := make(chan error, 1)
		go func() { _, err := conn.Write(b); errc <- err }()
		got := make([]byte, len(b))
		if _, err := io.ReadFull(conn, got); err != nil {
			t.Fatalf("read the echo: %v", err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Fatal("the echo differs from what was sent")
		}
	}
	echoed(before)
	c.Logs.WaitFor(t, 20*time.Second, 2, "connector certificate renewed", logbuf.Field("connector", id))
	echoed(after)
	conn.CloseWrite()
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the half-close: %d bytes, %v; want EOF", n, err)
	}
	if n := e.Logs.Count("connector tunnel up"); n != 1 {
		t.Errorf("%d tunnels came up; the renewal must not touch the live one", n)
	}

	renewed, _ := loadCert(t, c.Cfg.DataDir)
	if got := pki.ConnectorID(renewed.Leaf); got != id {
		t.Fatalf("the renewed certificate is for %s, want the same identity %s", got, id)
	}
	if renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 || renewed.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(first.Leaf.PublicKey) {
		t.Fatal("the renewed certificate has the first one's serial or key")
	}
	if n := len(audited(t, e, "renew")); n < 2 {
		t.Errorf("%d renew events in the audit trail, want one per renewal (2 or more)", n)
	}
	e.Logs.WaitFor(t, 5*time.Second, 2, "connector certificate renewed", logbuf.Field("connector", id))

	c.Stop()
	e.WaitRoutes(t, "echo", 0, 10*time.Second) // the edge has seen the old tunnel go
	for time.Now().Before(first.Leaf.NotAfter) {
		time.Sleep(20 * time.Millisecond) // the first certificate expires; its lifetime is 3s
	}
	c2 := testnet.StartConnector(t, kf, in(opts, c.Cfg.DataDir))
	c2.WaitTunnels(t, 1)
	e.Logs.WaitFor(t, 10*time.Second, 2, "connector tunnel up", logbuf.Field("connector", id))
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	echoOnce(t, e)
	cs, err := e.AdminClient(t).Connectors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].ID != id || strings.Join(cs[0].Grants, ",") != "echo" || !cs[0].NotAfter.After(first.Leaf.NotAfter) {
		t.Fatalf("connectors = %+v; want one, %s, granted echo, its expiry moved past %v", cs, id, first.Leaf.NotAfter)
	}
}

// renewDirect makes one renewal exchange as the connector would, with
// the identity in dir.
func renewDirect(t *testing.T, e *testnet.Edge, dir string) error {
	t.Helper()
	cert, pin := loadCert(t, dir)
	_, ca, _ := pki.LoadIdentity(dir)
	_, csr, err := pki.NewKeyAndCSR("site-a")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.DialTimeout("tcp", e.TunnelAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, pki.ClientTLSConfig(ca, pin, &cert, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	var resp wire.RenewResponse
	return tunnel.Handshake(ctx, tc, 10*time.Second, func() error {
		if err := wire.WriteMessage(tc, wire.KindRenewRequest, wire.RenewRequest{CSR: csr}); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindRenewResponse, &resp)
	})
}

// A revoked connector cannot renew: the edge refuses with the revocation,
// logs and audits it; the connector started again stops, saying so.
func TestRevokedConnectorCannotRenew(t *testing.T) {
	e, kf, opts, c := siteA(t, 0)
	c.Stop()
	if err := renewDirect(t, e, c.Cfg.DataDir); err != nil {
		t.Fatalf("an enrolled connector's renewal: %v", err)
	}
	if _, err := e.AdminClient(t).RevokeConnector(context.Background(), "site-a"); err != nil {
		t.Fatal(err)
	}
	err := renewDirect(t, e, c.Cfg.DataDir)
	var ref *wire.Refusal
	if !errors.As(err, &ref) || ref.Code != wire.CodeRevoked || !strings.Contains(ref.Reason, "ask for a new keyfile") {
		t.Fatalf("a revoked connector's renewal: %v; want a revocation refusal", err)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "certificate renewal refused", "code=revoked")
	evs := audited(t, e, "renew")
	if len(evs) != 2 || evs[0].Result != "ok" || !strings.HasPrefix(evs[1].Result, "refused: ") || !strings.Contains(evs[1].Result, "revoked") {
		t.Fatalf("renew events %+v; want one ok, then one refused as revoked", evs)
	}
	s := scrape(t, e.AdminAddr().String(), metricsToken(t, e.Cfg.DataDir))
	s.want(t, `sallyport_edge_renewals_total{result="ok"}`, 1)
	s.want(t, `sallyport_edge_renewals_total{result="revoked"}`, 1)
	c2 := testnet.StartConnector(t, kf, in(opts, c.Cfg.DataDir))
	if err := c2.Done(t, 20*time.Second); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the revoked connector stopped with %v", err)
	}
}

// A connector whose certificate expired while it was offline is told so,
// and what to do: at its start, by its own clock, and by the edge, which
// refuses the certificate in the TLS handshake and logs why.
func TestExpiredConnectorIsToldToEnrollAgain(t *testing.T) {
	e, kf, opts, c := siteA(t, 2*time.Second)
	c.Stop()
	cert, _ := loadCert(t, c.Cfg.DataDir)
	for time.Now().Before(cert.Leaf.NotAfter) {
		time.Sleep(20 * time.Millisecond) // offline until its 2s lifetime is over
	}

	// The edge refuses it, in words the connector can match, and logs why.
	err := renewDirect(t, e, c.Cfg.DataDir)
	if err == nil || !strings.Contains(err.Error(), "expired certificate") {
		t.Fatalf("renewal with an expired certificate: %v; want the edge's TLS refusal", err)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "its certificate has expired", "enroll again", "--replace")

	const todo = "sallyport token create --name site-a --replace"
	c2 := testnet.StartConnector(t, "", in(opts, c.Cfg.DataDir))
	err = c2.Done(t, 20*time.Second)
	if !errors.Is(err, connector.ErrExpired) || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), todo) {
		t.Fatalf("the expired connector stopped with %v; want ErrExpired saying what to do (%s)", err, todo)
	}
	if n := c2.Logs.Count("its certificate has expired", todo); n != 1 {
		t.Errorf("the connector's log says %d times that its certificate expired; want once:\n%s", n, c2.Logs.Tail(10))
	}

	// With its old keyfile, used already, it tries to enroll again and is
	// told both things.
	c3 := testnet.StartConnector(t, kf, in(opts, c.Cfg.DataDir))
	err = c3.Done(t, 20*time.Second)
	if !errors.Is(err, connector.ErrExpired) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("with the used keyfile: %v; want the expiry and the used token", err)
	}
}

// A connector whose renewal the edge refuses as revoked logs it, with the
// edge's words, and stops. (A real edge closes a revoked connector's
// tunnels first, so the connector hears it from its reconnect; this edge
// keeps the tunnel up so that the renewal is what says it.)
func TestConnectorStopsWhenRenewalIsRefused(t *testing.T) {
	r := testnet.StartRogueEdge(t)
	dir := filepath.Join(t.TempDir(), "connector")
	r.EnrollFor(t, dir, "site-a", 3*time.Second)
	c := testnet.StartConnector(t, "", testnet.ConnectorOptions{DataDir: dir, Edges: []string{r.Addr()},
		Services: map[string]string{"echo": testnet.Echo(t).Addr()}})
	r.AcceptTunnel(t)
	c.WaitTunnels(t, 1)

	// Two seconds in, the connector asks to renew.
	tc := r.AcceptTLS(t)
	kind, body, err := tunnel.ReadOpening(context.Background(), tc, tunnel.Config{})
	if err != nil || kind != wire.KindRenewRequest {
		t.Fatalf("the connector's second connection opened with %v, %v; want a renew request", kind, err)
	}
	var req wire.RenewRequest
	if err := wire.Decode(kind, body, &req); err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificateRequest(req.CSR); err != nil {
		t.Fatalf("the renew request's CSR: %v", err)
	}
	const reason = "connector site-a was revoked at 2026-01-02T03:04:05Z by the edge's operator; ask for a new keyfile"
	tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeRevoked, Reason: reason})
	err = c.Done(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), reason) {
		t.Fatalf("the connector stopped with %v; want the edge's reason", err)
	}
	if n := c.Logs.Count("refuses to renew", "revoked", "ask for a new keyfile"); n != 1 {
		t.Errorf("the connector logged the refused renewal %d times, want once:\n%s", n, c.Logs.Tail(10))
	}
}

// TestRenewalsBounded plays a connector that renews over and over: after
// a few renewals in a row the edge refuses, saying to try later, without
// signing or writing anything; the connector's tunnel is not touched.
func TestRenewalsBounded(t *testing.T) {
	e, _, _, c := siteA(t, 0)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	refused := 0
	for range 10 {
		err := renewDirect(t, e, c.Cfg.DataDir)
		var ref *wire.Refusal
		switch {
		case err == nil:
		case errors.As(err, &ref) && ref.Code == wire.CodeUnavailable && strings.Contains(ref.Reason, "try again later"):
			refused++
		default:
			t.Fatalf("a renewal: %v", err)
		}
	}
	if refused != 10-3 {
		t.Fatalf("%d of 10 renewals in a row refused; want all but the first 3", refused)
	}
	if n := len(audited(t, e, "renew")); n < 10 {
		t.Errorf("%d renew events in the audit trail; want each renewal and refusal", n)
	}
	echoOnce(t, e)
}
