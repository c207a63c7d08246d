package pki_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
)

// A renewed certificate has a new serial and validity but the same
// identity id; a certificate issued before ids were carried (no URI) is
// known by its serial, as before; a URI with a malformed id is ignored.
func TestRenewConnectorKeepsTheID(t *testing.T) {
	e := newEdge(t)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "site-a")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, id, err := e.ca.SignConnector(csr, "site-a", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := x509.ParseCertificate(der)
	key2, _ := pki.NewKey()
	csr2, _ := pki.NewCSR(key2, "site-a")
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
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "site-a")
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
