package pki_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
)

// A renewed certificate has a new serial and validity but the same
// identity id; a certificate issued before ids were carried (no URI) is
// known by its serial, as before; a URI with a malformed id is ignored.
func TestRenewConnectorKeepsTheID(t *testing.T) {
	e := newEdge(t)
	_, csr, err := pki.NewKeyAndCSR("site-a")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, id, err := e.ca.SignConnector(csr, "site-a", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := x509.ParseCertificate(der)
	_, csr2, _ := pki.NewKeyAndCSR("site-a")
	der2, err := e.ca.RenewConnector(csr2, "site-a", id, now.Add(40*time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	second, _ := x509.ParseCertificate(der2)
	if got := pki.ConnectorID(second); got != id {
		t.Errorf("renewed certificate's id %q, want %q", got, id)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the renewed certificate has the same serial")
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed NotAfter %v is not after %v", second.NotAfter, first.NotAfter)
	}
	if _, err := e.ca.RenewConnector(csr2, "site-a", "../etc", now, time.Hour); err == nil {
		t.Error("RenewConnector took a malformed id")
	}

	// A legacy certificate: no URI, the id is the serial.
	serial, _ := new(big.Int).SetString("0123456789abcdef0123456789abcdef", 16)
	legacy := selfSigned(t, serial, nil)
	if got := pki.ConnectorID(legacy); got != "0123456789abcdef0123456789abcdef" {
		t.Errorf("legacy certificate's id %q, want its serial", got)
	}
	odd := selfSigned(t, serial, []*url.URL{{Scheme: "urn", Opaque: "sallyport:connector:NOT-HEX"}})
	if got := pki.ConnectorID(odd); got != "0123456789abcdef0123456789abcdef" {
		t.Errorf("a malformed id URI gave id %q, want the serial", got)
	}
}

func selfSigned(t *testing.T, serial *big.Int, uris []*url.URL) *x509.Certificate {
	t.Helper()
	key, _ := pki.NewKey()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "old"}, URIs: uris,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// RenewAt is two thirds into the lifetime counted from issue, whatever
// the lifetime, not from the backdated NotBefore.
func TestRenewAt(t *testing.T) {
	e := newEdge(t)
	_, csr, _ := pki.NewKeyAndCSR("site-a")
	now := time.Now().Truncate(time.Second)
	for _, ttl := range []time.Duration{3 * time.Second, 7 * 24 * time.Hour} {
		der, _, err := e.ca.SignConnector(csr, "site-a", now, ttl)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		if got, want := pki.RenewAt(cert), now.Add(ttl*2/3); !got.Equal(want) {
			t.Errorf("ttl %v: RenewAt = %v, want %v", ttl, got, want)
		}
	}
}

// The edge's server certificate is reissued while the edge runs: a
// handshake once the certificate is within 30 days of expiry gets a new
// one (also written to disk, so a restart keeps it), which the connector
// accepts; the handshakes before got the old one.
func TestServerCertsReissueBeforeExpiry(t *testing.T) {
	dir := t.TempDir()
	real := time.Now()
	ca, err := pki.LoadOrCreateCA(dir, real)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := real.Add(-340 * 24 * time.Hour) // the edge started 340 days ago
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	var renewals []*x509.Certificate
	certs, err := pki.NewServerCerts(dir, ca, []string{"edge.example.com"}, now, func(leaf *x509.Certificate, err error) {
		if err != nil {
			t.Errorf("reissue failed: %v", err)
			return
		}
		renewals = append(renewals, leaf)
	})
	if err != nil {
		t.Fatal(err)
	}
	client := pki.ClientTLSConfig(ca.Certificate(), ca.Pin(), nil, nil)
	served := func() *x509.Certificate {
		o := handshake(t, transports()[1], certs.TLSConfig(nil), client)
		if o.clientErr != nil || o.serverErr != nil {
			t.Fatalf("handshake: client %v, server %v", o.clientErr, o.serverErr)
		}
		return o.clientState.PeerCertificates[0]
	}
	first := served()
	if len(renewals) != 0 {
		t.Fatalf("reissued %d times with 365 days left", len(renewals))
	}
	mu.Lock()
	clock = real // 25 days left
	mu.Unlock()
	second := served()
	if len(renewals) != 1 || second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("with %v left: %d reissues, serial %x (was %x); want a new certificate",
			first.NotAfter.Sub(real).Round(time.Hour), len(renewals), second.SerialNumber, first.SerialNumber)
	}
	if !second.NotAfter.After(real.Add(300 * 24 * time.Hour)) {
		t.Errorf("the new certificate expires %v", second.NotAfter)
	}
	if third := served(); third.SerialNumber.Cmp(second.SerialNumber) != 0 || len(renewals) != 1 {
		t.Error("the fresh certificate was reissued again")
	}
	onDisk, err := pki.LoadOrCreateServerCert(dir, ca, []string{"edge.example.com"}, real)
	if err != nil {
		t.Fatal(err)
	}
	if onDisk.Leaf.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Error("the reissued certificate is not the one on disk")
	}
}
