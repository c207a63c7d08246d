package pki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// transport makes a connected pair of raw connections: server side, client
// side.
type transport struct {
	name string
	pair func(t *testing.T) (net.Conn, net.Conn)
}

// transports are the connection kinds every handshake scenario runs over.
func transports() []transport {
	return []transport{
		{"pipe", func(t *testing.T) (net.Conn, net.Conn) {
			s, c := net.Pipe()
			return s, c
		}},
		{"tcp", func(t *testing.T) (net.Conn, net.Conn) {
			c, s := loopback.Pair(t)
			return s, c
		}},
	}
}

// outcome is what each side of one handshake saw.
type outcome struct {
	serverErr, clientErr     error
	serverState, clientState tls.ConnectionState
}

// handshake runs a real TLS handshake between srvCfg and cliCfg over tr.
// After a successful handshake the server sends one byte and the client
// reads it, so that a client certificate the server refuses (which TLS 1.3
// reports after the client's handshake has returned) shows up as clientErr.
func handshake(t *testing.T, tr transport, srvCfg, cliCfg *tls.Config) outcome {
	t.Helper()
	sc, cc := tr.pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var o outcome
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer sc.Close()
		s := tls.Server(sc, srvCfg)
		err := s.HandshakeContext(ctx)
		if err == nil {
			o.serverState = s.ConnectionState()
			_, err = s.Write([]byte{'k'})
		}
		o.serverErr = err
	}()
	go func() {
		defer wg.Done()
		defer cc.Close()
		c := tls.Client(cc, cliCfg)
		err := c.HandshakeContext(ctx)
		if err == nil {
			o.clientState = c.ConnectionState()
			_, err = io.ReadFull(c, make([]byte, 1))
		}
		o.clientErr = err
	}()
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("handshake did not finish within its deadline (server: %v, client: %v)", o.serverErr, o.clientErr)
	}
	return o
}

// edge is one edge's CA and server certificate, made in a temporary dir.
type edge struct {
	ca   *pki.CA
	cert tls.Certificate
}

func newEdge(t *testing.T) edge {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.LoadOrCreateCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadOrCreateServerCert(dir, ca, []string{"edge.example.com"}, now)
	if err != nil {
		t.Fatal(err)
	}
	return edge{ca: ca, cert: cert}
}

// enrollConnector does the connector's and the edge's halves of issuing a
// connector certificate, and returns it with its id.
func enrollConnector(t *testing.T, ca *pki.CA, name string) (tls.Certificate, string) {
	t.Helper()
	return pkitest.Connector(t, ca, name, 24*time.Hour)
}

func TestMutualTLS(t *testing.T) {
	e := newEdge(t)
	cc, id := enrollConnector(t, e.ca, "site-a")
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			o := handshake(t, tr,
				pki.ServerTLSConfig(e.ca, e.cert, []string{"sallyport/1"}),
				pki.ClientTLSConfig(e.ca.Certificate(), e.ca.Pin(), &cc, []string{"sallyport/1"}))
			if o.serverErr != nil || o.clientErr != nil {
				t.Fatalf("handshake failed: server: %v; client: %v", o.serverErr, o.clientErr)
			}
			if o.serverState.Version != tls.VersionTLS13 {
				t.Errorf("negotiated version %x, want TLS 1.3", o.serverState.Version)
			}
			if got := o.clientState.NegotiatedProtocol; got != "sallyport/1" {
				t.Errorf("negotiated protocol %q, want sallyport/1", got)
			}
			peer, err := pki.PeerConnector(o.serverState)
			if err != nil {
				t.Fatalf("PeerConnector: %v", err)
			}
			if peer.Subject.CommonName != "site-a" {
				t.Errorf("peer name %q, want site-a", peer.Subject.CommonName)
			}
			if got := pki.ConnectorID(peer); got != id {
				t.Errorf("ConnectorID = %q, want the id SignConnector returned, %q", got, id)
			}
		})
	}
}

func TestEdgeRefusesConnectorOfAnotherCA(t *testing.T) {
	e := newEdge(t)
	other := newEdge(t)
	foreign, _ := enrollConnector(t, other.ca, "intruder")
	for _, tr := range transports() {
		t.Run(tr.name+"/presented", func(t *testing.T) {
			cli := pki.ClientTLSConfig(e.ca.Certificate(), e.ca.Pin(), nil, nil)
			// Present the foreign certificate whatever the edge asks for.
			cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
			o := handshake(t, tr, pki.ServerTLSConfig(e.ca, e.cert, nil), cli)
			var unknown x509.UnknownAuthorityError
			if !errors.As(o.serverErr, &unknown) {
				t.Fatalf("edge accepted a connector certificate of another CA: server error %v", o.serverErr)
			}
			if o.clientErr == nil {
				t.Fatal("connector saw no error although the edge refused it")
			}
		})
		t.Run(tr.name+"/not-sent", func(t *testing.T) {
			// Through Certificates, crypto/tls does not even send a
			// certificate the edge's CA list does not name; the edge then
			// sees no certificate and the tunnel code refuses it.
			o := handshake(t, tr, pki.ServerTLSConfig(e.ca, e.cert, nil),
				pki.ClientTLSConfig(e.ca.Certificate(), e.ca.Pin(), &foreign, nil))
			if o.serverErr != nil {
				t.Fatalf("server: %v", o.serverErr)
			}
			_, err := pki.PeerConnector(o.serverState)
			if !errors.Is(err, pki.ErrNoClientCert) {
				t.Fatalf("PeerConnector = %v, want ErrNoClientCert", err)
			}
			if !strings.Contains(err.Error(), "enroll first") {
				t.Errorf("error %q does not tell the user to enroll", err)
			}
		})
	}
}

func TestConnectorRefusesEdgeOfAnotherCA(t *testing.T) {
	e := newEdge(t)
	impostor := newEdge(t)
	cc, _ := enrollConnector(t, e.ca, "site-a")
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			o := handshake(t, tr, pki.ServerTLSConfig(impostor.ca, impostor.cert, nil),
				pki.ClientTLSConfig(e.ca.Certificate(), e.ca.Pin(), &cc, nil))
			checkPinMismatch(t, o.clientErr, e.ca.Pin(), impostor.ca.Pin())
			if o.serverErr == nil {
				t.Error("the impostor edge saw no error")
			}
		})
	}
}

// TestPinMismatchThroughDialer shows that the typed error survives
// tls.Dialer, the way a connector dials.
func TestPinMismatchThroughDialer(t *testing.T) {
	e := newEdge(t)
	impostor := newEdge(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.ServerTLSConfig(impostor.ca, impostor.cert, nil))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = c.(*tls.Conn).Handshake()
		_ = c.Close()
	}()
	defer wg.Wait()
	defer ln.Close()

	d := tls.Dialer{Config: pki.EnrollTLSConfig(e.ca.Pin(), nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err == nil {
		_ = c.Close()
	}
	checkPinMismatch(t, err, e.ca.Pin(), impostor.ca.Pin())
}

func checkPinMismatch(t *testing.T, err error, want, got string) {
	t.Helper()
	var pm *pki.PinMismatchError
	if !errors.As(err, &pm) {
		t.Fatalf("error %v is not a *PinMismatchError", err)
	}
	if pm.Want != want || pm.Got != got {
		t.Errorf("PinMismatchError{Want: %s, Got: %s}, want {%s, %s}", pm.Want, pm.Got, want, got)
	}
	msg := err.Error()
	for _, s := range []string{want, got, "another edge", "get a new keyfile"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %q", msg, s)
		}
	}
}

func TestEnrollTLSConfig(t *testing.T) {
	e := newEdge(t)
	other := newEdge(t)
	for _, tr := range transports() {
		t.Run(tr.name+"/right-pin", func(t *testing.T) {
			o := handshake(t, tr, pki.ServerTLSConfig(e.ca, e.cert, nil), pki.EnrollTLSConfig(e.ca.Pin(), nil))
			if o.serverErr != nil || o.clientErr != nil {
				t.Fatalf("handshake failed: server: %v; client: %v", o.serverErr, o.clientErr)
			}
			ca, err := pki.MatchPinnedCA(o.clientState.PeerCertificates, e.ca.Pin())
			if err != nil {
				t.Fatalf("MatchPinnedCA: %v", err)
			}
			if !ca.Equal(e.ca.Certificate()) {
				t.Error("MatchPinnedCA returned a certificate other than the edge's CA")
			}
			if _, err := pki.PeerConnector(o.serverState); !errors.Is(err, pki.ErrNoClientCert) {
				t.Errorf("PeerConnector on an enrolling connection = %v, want ErrNoClientCert", err)
			}
		})
		t.Run(tr.name+"/wrong-pin", func(t *testing.T) {
			o := handshake(t, tr, pki.ServerTLSConfig(e.ca, e.cert, nil), pki.EnrollTLSConfig(other.ca.Pin(), nil))
			checkPinMismatch(t, o.clientErr, other.ca.Pin(), e.ca.Pin())
		})
	}
}

// TestConnectorCertCannotServe shows that a connector's certificate, though
// issued by the right CA, does not let its holder pose as the edge.
func TestConnectorCertCannotServe(t *testing.T) {
	e := newEdge(t)
	cc, _ := enrollConnector(t, e.ca, "site-a")
	posing := tls.Certificate{
		Certificate: [][]byte{cc.Certificate[0], e.ca.Certificate().Raw},
		PrivateKey:  cc.PrivateKey,
	}
	clients := map[string]*tls.Config{
		"tunnel": pki.ClientTLSConfig(e.ca.Certificate(), e.ca.Pin(), nil, nil),
		"enroll": pki.EnrollTLSConfig(e.ca.Pin(), nil),
	}
	for _, tr := range transports() {
		for name, cli := range clients {
			t.Run(tr.name+"/"+name, func(t *testing.T) {
				o := handshake(t, tr, pki.ServerTLSConfig(e.ca, posing, nil), cli)
				var inv x509.CertificateInvalidError
				if !errors.As(o.clientErr, &inv) || inv.Reason != x509.IncompatibleUsage {
					t.Fatalf("client error = %v, want an incompatible key usage error", o.clientErr)
				}
				var pm *pki.PinMismatchError
				if errors.As(o.clientErr, &pm) {
					t.Error("a wrong key usage was reported as a pin mismatch")
				}
			})
		}
	}
}

// TestEdgeCertCannotBeClient is the mirror: the edge's server certificate
// is not accepted as a connector's.
func TestEdgeCertCannotBeClient(t *testing.T) {
	e := newEdge(t)
	leafOnly := tls.Certificate{Certificate: e.cert.Certificate[:1], PrivateKey: e.cert.PrivateKey}
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			o := handshake(t, tr, pki.ServerTLSConfig(e.ca, e.cert, nil),
				pki.ClientTLSConfig(e.ca.Certificate(), e.ca.Pin(), &leafOnly, nil))
			var inv x509.CertificateInvalidError
			if !errors.As(o.serverErr, &inv) || inv.Reason != x509.IncompatibleUsage {
				t.Fatalf("server error = %v, want an incompatible key usage error", o.serverErr)
			}
		})
	}
}

// TestClientRefusesMalformedPin: a damaged pin fails closed, with an error
// saying so.
func TestClientRefusesMalformedPin(t *testing.T) {
	e := newEdge(t)
	tr := transports()[0]
	o := handshake(t, tr, pki.ServerTLSConfig(e.ca, e.cert, nil), pki.EnrollTLSConfig("sha256:nothex", nil))
	if !errors.Is(o.clientErr, pki.ErrBadPin) {
		t.Fatalf("client error = %v, want ErrBadPin", o.clientErr)
	}
}
