package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
)

// routeFor has ca sign a route certificate for a new key.
func routeFor(t *testing.T, ca *pki.CA, hosts ...string) pki.Member {
	t.Helper()
	key, csr, err := pki.NewKeyAndCSR("ignored")
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.SignRoute(csr, "sallyport-edge-1234abcd", hosts, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return pki.Member{CA: ca.Certificate(), Route: der, RouteKey: key}
}

func TestSignRouteForJoin(t *testing.T) {
	ca := pkitest.NewCA(t)
	m := routeFor(t, ca, "edge-b.example.com", "198.18.0.7")
	cert, err := m.Check()
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "sallyport-edge-1234abcd" || !slices.Equal(cert.DNSNames, []string{"edge-b.example.com"}) ||
		len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("198.18.0.7")) {
		t.Errorf("route certificate names: CN %q, DNS %v, IP %v", cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || cert.IsCA {
		t.Errorf("route certificate usages %v, CA %v", cert.ExtKeyUsage, cert.IsCA)
	}
	if _, err := ca.SignRoute([]byte("not a csr"), "sallyport-x", []string{"h"}, time.Now(), time.Hour); !errors.Is(err, pki.ErrBadCSR) {
		t.Errorf("garbage CSR: %v", err)
	}
	_, csr, _ := pki.NewKeyAndCSR("x")
	if _, err := ca.SignRoute(csr, "sallyport-x", []string{"h:6222"}, time.Now(), time.Hour); err == nil {
		t.Error("a host with a port was signed")
	}
}

func TestMemberCheckRefusesMismatches(t *testing.T) {
	ca, other := pkitest.NewCA(t), pkitest.NewCA(t)
	otherKey, _ := other.MarshalKey()
	m := routeFor(t, ca, "edge-b")
	bad := m
	bad.CAKey = otherKey
	if _, err := bad.Check(); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("another CA's key: %v", err)
	}
	bad = m
	bad.RouteKey = routeFor(t, ca, "edge-c").RouteKey
	if _, err := bad.Check(); err == nil || !strings.Contains(err.Error(), "not for this member's key") {
		t.Errorf("another key: %v", err)
	}
	bad = m
	bad.CA = other.Certificate()
	if _, err := bad.Check(); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("another CA: %v", err)
	}
	if err := pki.SaveMember(t.TempDir(), bad); err == nil {
		t.Error("SaveMember wrote a member that does not hold together")
	}
}

func TestSaveMemberAndJoinState(t *testing.T) {
	ca := pkitest.NewCA(t)
	dir := filepath.Join(t.TempDir(), "pki")
	if joined, err := pki.JoinState(dir, ca.Pin(), true); joined || err != nil {
		t.Fatalf("empty directory: joined %v, %v", joined, err)
	}
	m := routeFor(t, ca, "edge-b")
	witness := m
	if err := pki.SaveMember(dir, witness); err != nil {
		t.Fatal(err)
	}
	if joined, err := pki.JoinState(dir, ca.Pin(), false); !joined || err != nil {
		t.Errorf("witness after its join: joined %v, %v", joined, err)
	}
	if _, err := pki.JoinState(dir, ca.Pin(), true); err == nil || !strings.Contains(err.Error(), "joined as a witness") {
		t.Errorf("a witness directory used for an edge: %v", err)
	}
	m.CAKey, _ = ca.MarshalKey()
	if err := pki.SaveMember(dir, m); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600, "route.crt": 0o644, "route.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v; want %v", name, err, fi, mode)
		}
	}
	loaded, err := pki.LoadOrCreateCA(dir, time.Now())
	if err != nil || loaded.Pin() != ca.Pin() {
		t.Fatalf("the saved CA does not load as the same CA: %v", err)
	}
	if joined, err := pki.JoinState(dir, ca.Pin(), true); !joined || err != nil {
		t.Errorf("edge after its join: joined %v, %v", joined, err)
	}
	other := pkitest.NewCA(t)
	if _, err := pki.JoinState(dir, other.Pin(), true); !errors.Is(err, pki.ErrOtherCA) || !strings.Contains(err.Error(), "would replace it") {
		t.Errorf("another cluster's keyfile: %v", err)
	}
}

// A cluster member's route certificate serves TLS server authentication
// and chains to the CA, but a connector (enrolled, or enrolling by pin)
// does not take it for an edge's: a witness holds one and must not pass
// for an edge.
func TestConnectorRefusesRouteCertificateAsEdge(t *testing.T) {
	e := newEdge(t)
	route, err := pki.LoadOrIssueRoute(t.TempDir(), e.ca, "sallyport-witness-1", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := enrollConnector(t, e.ca, "site-a")
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			for name, cli := range map[string]*tls.Config{
				"enrolled":  pki.ClientTLSConfig(e.ca.Certificate(), e.ca.Pin(), &cc, nil),
				"enrolling": pki.EnrollTLSConfig(e.ca.Pin(), nil),
			} {
				o := handshake(t, tr, pki.ServerTLSConfig(e.ca, route, nil), cli)
				if o.clientErr == nil || !strings.Contains(o.clientErr.Error(), "route certificate of member \"sallyport-witness-1\"") {
					t.Errorf("%s connector facing a route certificate: %v", name, o.clientErr)
				}
			}
			// The edge's own tunnel certificate still passes.
			if o := handshake(t, tr, pki.ServerTLSConfig(e.ca, e.cert, nil), pki.EnrollTLSConfig(e.ca.Pin(), nil)); o.clientErr != nil {
				t.Errorf("enrolling connector facing the edge: %v", o.clientErr)
			}
		})
	}
}
