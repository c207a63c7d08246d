package pki_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
)

func TestSignRoute(t *testing.T) {
	ca := pkitest.NewCA(t)
	_, csr, err := pki.NewKeyAndCSR("ignored")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := ca.SignRoute(csr, "sallyport-edge-1", []string{"10.0.0.7", "edge1.example.com", "::1"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "sallyport-edge-1" {
		t.Errorf("CN = %q", cert.Subject.CommonName)
	}
	if len(cert.ExtKeyUsage) != 2 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || cert.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU = %v, want serverAuth and clientAuth", cert.ExtKeyUsage)
	}
	if len(cert.IPAddresses) != 2 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")) || !cert.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IP SANs = %v", cert.IPAddresses)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "edge1.example.com" {
		t.Errorf("DNS SANs = %v", cert.DNSNames)
	}
	if err := cert.CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Error(err)
	}
	if cert.NotAfter.After(now.Add(time.Hour)) {
		t.Errorf("NotAfter %v past now+ttl", cert.NotAfter)
	}

	for _, bad := range []struct {
		name  string
		csr   []byte
		host  string
		isCSR bool
	}{
		{"garbage CSR", []byte("not a csr"), "10.0.0.7", true},
		{"host with port", csr, "10.0.0.7:6222", false},
	} {
		_, err := ca.SignRoute(bad.csr, "m", []string{bad.host}, now, time.Hour)
		if err == nil || errors.Is(err, pki.ErrBadCSR) != bad.isCSR {
			t.Errorf("%s: err = %v", bad.name, err)
		}
	}
}

func TestLoadOrIssueRoute(t *testing.T) {
	ca := pkitest.NewCA(t)
	dir := t.TempDir()
	now := time.Now()
	first, err := pki.LoadOrIssueRoute(dir, ca, "sallyport-edge-1", []string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, pki.RouteKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("route.key mode %v, want 0600", fi.Mode().Perm())
	}
	same, err := pki.LoadOrIssueRoute(dir, ca, "sallyport-edge-1", []string{"127.0.0.1"}, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(same.Leaf.Raw, first.Leaf.Raw) {
		t.Error("a valid route certificate for the same name and hosts was reissued")
	}
	for _, tc := range []struct {
		what  string
		name  string
		hosts []string
		at    time.Time
	}{
		{"other hosts", "sallyport-edge-1", []string{"10.1.1.1"}, now},
		{"other name", "sallyport-edge-2", []string{"127.0.0.1"}, now},
		{"past two thirds of its life", "sallyport-edge-1", []string{"127.0.0.1"}, now.Add(pki.RouteValidity * 2 / 3).Add(time.Hour)},
	} {
		got, err := pki.LoadOrIssueRoute(dir, ca, tc.name, tc.hosts, tc.at)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		if bytes.Equal(got.Leaf.Raw, first.Leaf.Raw) {
			t.Errorf("%s: not reissued", tc.what)
		}
		first = got
	}
	// Another CA (a data directory restored from elsewhere): reissued.
	other, err := pki.LoadOrIssueRoute(dir, pkitest.NewCA(t), "sallyport-edge-1", []string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if other.Leaf.CheckSignatureFrom(ca.Certificate()) == nil {
		t.Error("a route certificate of another CA was kept")
	}
}

func TestLoadRoute(t *testing.T) {
	ca := pkitest.NewCA(t)
	dir := t.TempDir()
	if _, _, err := pki.LoadRoute(dir); err == nil || !strings.Contains(err.Error(), "join the cluster") {
		t.Fatalf("empty dir: err = %v, want one that says to join", err)
	}
	if _, err := pki.LoadOrIssueRoute(dir, ca, "sallyport-witness", []string{"127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), pemOf(ca.Certificate()), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, caCert, err := pki.LoadRoute(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !caCert.Equal(ca.Certificate()) || cert.Leaf.Subject.CommonName != "sallyport-witness" {
		t.Errorf("loaded %q with CA %q", cert.Leaf.Subject.CommonName, caCert.Subject.CommonName)
	}
	// A ca.crt of another CA: refused, naming the files.
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), pemOf(pkitest.NewCA(t).Certificate()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.LoadRoute(dir); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Errorf("foreign CA: err = %v", err)
	}
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestRouteTLS plays every peer that might try to form a route: only a
// route certificate of the same CA gets through, on either side.
func TestRouteTLS(t *testing.T) {
	ca := pkitest.NewCA(t)
	member := pki.RouteTLSConfig(ca.Certificate(), pkitest.Route(t, ca, "a"))
	peer := pki.RouteTLSConfig(ca.Certificate(), pkitest.Route(t, ca, "b"))
	tr := transports()[1]
	if o := handshake(t, tr, member, peer); o.serverErr != nil || o.clientErr != nil {
		t.Fatalf("two members: server %v, client %v", o.serverErr, o.clientErr)
	}

	other := pkitest.NewCA(t)
	connector, _ := pkitest.Connector(t, ca, "site-a", time.Hour)
	connector.Certificate = append(connector.Certificate, ca.Certificate().Raw)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"a route certificate of another CA", pki.RouteTLSConfig(other.Certificate(), pkitest.Route(t, other, "x"))},
		{"a connector certificate of the same CA", pki.RouteTLSConfig(ca.Certificate(), connector)},
		{"no certificate", &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}},
	} {
		t.Run(tc.name+" dials in", func(t *testing.T) {
			o := handshake(t, tr, member, tc.cfg)
			if o.serverErr == nil {
				t.Fatal("the member accepted it")
			}
		})
		if tc.cfg.Certificates == nil {
			continue
		}
		t.Run(tc.name+" is dialled", func(t *testing.T) {
			o := handshake(t, tr, tc.cfg, member)
			if o.clientErr == nil {
				t.Fatal("the member completed a route to it")
			}
		})
	}
}
