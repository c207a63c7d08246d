// Package pkitest issues sallyport certificates for tests, as the edge's
// CA does at enrollment but without one: for a rogue edge that a
// connector should trust, an impostor signed by another CA, or a handshake
// test.
//
//	ca := pkitest.NewCA(t)
//	cert, id := pkitest.Connector(t, ca, "site-a", time.Hour)
package pkitest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
)

// NewCA creates a CA in a temporary directory of t.
func NewCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Connector makes a connector key and has ca certify it for name, valid
// for ttl from now, the way enrollment does (pki.NewKeyAndCSR,
// CA.SignConnector). It returns the certificate with its key and parsed
// Leaf, and the connector id.
func Connector(t testing.TB, ca *pki.CA, name string, ttl time.Duration) (tls.Certificate, string) {
	t.Helper()
	key, csr, err := pki.NewKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	der, id, err := ca.SignConnector(csr, name, time.Now(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, id
}

// Route makes a cluster member's route certificate signed by ca for name,
// valid for a day from now, the way a join does (pki.NewKeyAndCSR,
// CA.SignRoute), with the CA in its chain.
func Route(t testing.TB, ca *pki.CA, name string) tls.Certificate {
	t.Helper()
	key, csr, err := pki.NewKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.SignRoute(csr, name, []string{"127.0.0.1"}, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Certificate().Raw}, PrivateKey: key, Leaf: leaf}
}

// PlaceRoute puts into pkiDir what joining the cluster leaves for a
// witness (which holds no CA key): a route certificate and key of ca for
// name (route.crt, route.key) and ca's certificate (ca.crt), so that
// pki.LoadRoute(pkiDir) reads them.
func PlaceRoute(t testing.TB, ca *pki.CA, pkiDir, name string) {
	t.Helper()
	if _, err := pki.LoadOrIssueRoute(pkiDir, ca, name, []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(pkiDir, pki.CACertFile), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
}
