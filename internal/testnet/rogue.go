package testnet

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// RogueEdge is an edge built by the test from the project's own packages,
// which a connector trusts (it holds a certificate from the rogue's CA) but
// which does whatever the test wants: it stands for a compromised edge.
type RogueEdge struct {
	CA  *pki.CA
	l   net.Listener
	tls *tls.Config
}

// StartRogueEdge makes a CA and a server certificate and listens on loopback.
func StartRogueEdge(t testing.TB) *RogueEdge {
	t.Helper()
	ca := pkitest.NewCA(t)
	cert, err := pki.LoadOrCreateServerCert(t.TempDir(), ca, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &RogueEdge{CA: ca, l: l, tls: pki.ServerTLSConfig(ca, cert, nil)}
}

// Addr is the rogue edge's tunnel address.
func (r *RogueEdge) Addr() string { return r.l.Addr().String() }

// Enroll writes a connector identity signed by the rogue's CA into
// dataDir, as a real enrollment would have, valid for an hour.
func (r *RogueEdge) Enroll(t testing.TB, dataDir, name string) {
	t.Helper()
	r.EnrollFor(t, dataDir, name, time.Hour)
}

// EnrollFor is Enroll with a certificate valid for ttl.
func (r *RogueEdge) EnrollFor(t testing.TB, dataDir, name string, ttl time.Duration) {
	t.Helper()
	cert, _ := pkitest.Connector(t, r.CA, name, ttl)
	if err := pki.SaveIdentity(filepath.Clean(dataDir), cert.Certificate[0], cert.PrivateKey.(*ecdsa.PrivateKey), r.CA.Certificate()); err != nil {
		t.Fatal(err)
	}
}

// AcceptTLS accepts one connection and completes TLS.
func (r *RogueEdge) AcceptTLS(t testing.TB) *tls.Conn {
	t.Helper()
	c, err := r.l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Server(c, r.tls)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("rogue edge TLS: %v", err)
	}
	tc.SetDeadline(time.Time{})
	t.Cleanup(func() { tc.Close() })
	return tc
}

// AcceptTunnel accepts a connector's tunnel and returns the session and
// the connector's Hello.
func (r *RogueEdge) AcceptTunnel(t testing.TB) (*tunnel.Session, wire.Hello) {
	t.Helper()
	tc := r.AcceptTLS(t)
	kind, body, err := tunnel.ReadOpening(context.Background(), tc, tunnel.Config{})
	if err != nil || kind != wire.KindHello {
		t.Fatalf("rogue edge: opening = %v, %v", kind, err)
	}
	var hello wire.Hello
	if err := wire.Decode(kind, body, &hello); err != nil {
		t.Fatal(err)
	}
	sess, err := tunnel.Server(tc, tunnel.Config{KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: time.Second}, wire.Welcome{EdgeID: "rogue"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess, hello
}
