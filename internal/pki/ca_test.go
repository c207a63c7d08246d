package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io/fs"
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

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	now := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	ca, err := pki.LoadOrCreateCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, pki.CAKeyFile), 0o600)

	cert := ca.Certificate()
	if !strings.HasPrefix(cert.Subject.CommonName, "sallyport edge CA ") {
		t.Errorf("CA common name %q", cert.Subject.CommonName)
	}
	if !cert.IsCA {
		t.Error("CA certificate is not a CA")
	}
	if years := cert.NotAfter.Sub(now).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("CA valid for %.1f years, want 10", years)
	}

	again, err := pki.LoadOrCreateCA(dir, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if again.Pin() != ca.Pin() || !again.Certificate().Equal(cert) {
		t.Error("reloading the CA from disk gave another CA")
	}

	other, err := pki.LoadOrCreateCA(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	if other.Pin() == ca.Pin() || other.Certificate().Subject.CommonName == cert.Subject.CommonName {
		t.Error("two new CAs share a pin or a name")
	}
}

func TestLoadOrCreateCADamaged(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		damage func(dir string) error
		file   string
	}{
		{"corrupt certificate", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, pki.CACertFile), []byte("not a certificate\n"), 0o644)
		}, pki.CACertFile},
		{"corrupt key", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, pki.CAKeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
		}, pki.CAKeyFile},
		{"missing key", func(dir string) error {
			return os.Remove(filepath.Join(dir, pki.CAKeyFile))
		}, pki.CAKeyFile},
		{"key of another CA", func(dir string) error {
			otherDir := filepath.Join(dir, "other")
			if _, err := pki.LoadOrCreateCA(otherDir, now); err != nil {
				return err
			}
			return os.Rename(filepath.Join(otherDir, pki.CAKeyFile), filepath.Join(dir, pki.CAKeyFile))
		}, pki.CAKeyFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := pki.LoadOrCreateCA(dir, now); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
			_, err := pki.LoadOrCreateCA(dir, now)
			if err == nil {
				t.Fatal("a damaged CA loaded without error")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.file)) {
				t.Errorf("error %q does not name %s", err, tc.file)
			}
			after, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
			if !bytes.Equal(before, after) {
				t.Error("loading a damaged CA changed ca.crt")
			}
		})
	}
}

func TestSignConnector(t *testing.T) {
	e := newEdge(t)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	// The CSR asks for another name; the edge certifies the name it chose.
	csr, err := pki.NewCSR(key, "admin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, id, err := e.ca.SignConnector(csr, "site-a", now, 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "site-a" {
		t.Errorf("common name %q, want site-a (the CSR's subject must be ignored)", cert.Subject.CommonName)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("extended key usage %v, want client auth only", cert.ExtKeyUsage)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v, want digital signature", cert.KeyUsage)
	}
	if cert.IsCA {
		t.Error("connector certificate is a CA")
	}
	if !cert.NotBefore.Before(now) || cert.NotAfter.Sub(now) > 90*24*time.Hour+time.Second || cert.NotAfter.Sub(now) < 90*24*time.Hour-time.Second {
		t.Errorf("validity %v..%v, want from before %v to 90 days after it", cert.NotBefore, cert.NotAfter, now)
	}
	if err := cert.CheckSignatureFrom(e.ca.Certificate()); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	if len(id) != 32 || strings.ToLower(id) != id {
		t.Errorf("id %q is not 32 lowercase hex digits", id)
	}
	if _, err := hex.DecodeString(id); err != nil {
		t.Errorf("id %q is not hex", id)
	}
	if pki.ConnectorID(cert) != id {
		t.Errorf("ConnectorID = %q, want %q", pki.ConnectorID(cert), id)
	}

	_, id2, err := e.ca.SignConnector(csr, "site-a", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id {
		t.Error("two certificates got the same id")
	}
}

func TestSignConnectorRefusesBadCSR(t *testing.T) {
	e := newEdge(t)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "site-a")
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(csr)
	forged[len(forged)-1] ^= 0x01 // the last byte belongs to the signature
	cases := map[string][]byte{
		"forged signature": forged,
		"garbage":          []byte("not a CSR"),
		"empty":            nil,
	}
	for name, der := range cases {
		t.Run(name, func(t *testing.T) {
			cert, _, err := e.ca.SignConnector(der, "site-a", time.Now(), time.Hour)
			if !errors.Is(err, pki.ErrBadCSR) {
				t.Fatalf("SignConnector = %v, want ErrBadCSR", err)
			}
			if cert != nil {
				t.Error("a certificate was returned with the error")
			}
		})
	}
	for _, bad := range []string{"", strings.Repeat("x", 65)} {
		if _, _, err := e.ca.SignConnector(csr, bad, time.Now(), time.Hour); err == nil {
			t.Errorf("SignConnector accepted the name %q", bad)
		}
	}
	if _, _, err := e.ca.SignConnector(csr, "site-a", time.Now(), 0); err == nil {
		t.Error("SignConnector accepted a zero validity")
	}
}

func TestLoadOrCreateServerCert(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	ca, err := pki.LoadOrCreateCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"edge.example.com", "192.0.2.7", "2001:db8::1"}
	c1, err := pki.LoadOrCreateServerCert(dir, ca, names, now)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(dir, pki.EdgeKeyFile), 0o600)
	if len(c1.Certificate) != 2 || !bytes.Equal(c1.Certificate[1], ca.Certificate().Raw) {
		t.Fatal("the chain is not leaf then CA")
	}
	leaf := c1.Leaf
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("extended key usage %v, want server auth only", leaf.ExtKeyUsage)
	}
	for _, n := range []string{"edge.example.com", "localhost"} {
		if !slices.Contains(leaf.DNSNames, n) {
			t.Errorf("DNS names %v lack %s", leaf.DNSNames, n)
		}
	}
	for _, s := range []string{"192.0.2.7", "2001:db8::1", "127.0.0.1", "::1"} {
		if !slices.ContainsFunc(leaf.IPAddresses, net.ParseIP(s).Equal) {
			t.Errorf("IP addresses %v lack %s", leaf.IPAddresses, s)
		}
	}
	if days := leaf.NotAfter.Sub(now).Hours() / 24; days < 364 || days > 366 {
		t.Errorf("valid for %.0f days, want a year", days)
	}

	same, err := pki.LoadOrCreateServerCert(dir, ca, []string{"2001:db8::1", "edge.example.com", "192.0.2.7"}, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if same.Leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Error("the certificate was reissued although nothing changed")
	}

	renamed, err := pki.LoadOrCreateServerCert(dir, ca, []string{"edge2.example.com"}, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if renamed.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 || !slices.Contains(renamed.Leaf.DNSNames, "edge2.example.com") {
		t.Error("changing the names did not reissue the certificate")
	}

	late := now.Add(340 * 24 * time.Hour)
	renewed, err := pki.LoadOrCreateServerCert(dir, ca, []string{"edge2.example.com"}, late)
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.Leaf.NotAfter.After(late.Add(300 * 24 * time.Hour)) {
		t.Errorf("a certificate expiring within 30 days was not renewed: expires %v", renewed.Leaf.NotAfter)
	}

	newCA, err := pki.LoadOrCreateCA(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	moved, err := pki.LoadOrCreateServerCert(dir, newCA, []string{"edge2.example.com"}, late)
	if err != nil {
		t.Fatal(err)
	}
	if err := moved.Leaf.CheckSignatureFrom(newCA.Certificate()); err != nil {
		t.Errorf("a certificate of the old CA was kept after the CA changed: %v", err)
	}

	if _, err := pki.LoadOrCreateServerCert(dir, ca, []string{"edge.example.com:5500"}, now); err == nil {
		t.Error("a name with a port was accepted")
	}
}

func TestParsePin(t *testing.T) {
	e := newEdge(t)
	good := e.ca.Pin()
	if len(good) != len("sha256:")+64 || !strings.HasPrefix(good, "sha256:") {
		t.Fatalf("pin %q is not sha256:<64 hex>", good)
	}
	if pki.PinOf(e.ca.Certificate()) != good {
		t.Error("PinOf and Pin disagree")
	}
	if b, err := pki.ParsePin(good); err != nil || len(b) != 32 {
		t.Errorf("ParsePin(%q) = %x, %v", good, b, err)
	}
	if _, err := pki.ParsePin(strings.ToUpper(good[:7]) + good[7:]); err == nil {
		t.Error("an upper-case algorithm name was accepted")
	}
	for _, bad := range []string{"", "sha256:", good[7:], "md5:" + good[7:], good + "0", good[:len(good)-1] + "g", "sha256:" + strings.Repeat("zz", 32)} {
		if _, err := pki.ParsePin(bad); !errors.Is(err, pki.ErrBadPin) {
			t.Errorf("ParsePin(%q) = %v, want ErrBadPin", bad, err)
		}
	}
}

func TestIdentity(t *testing.T) {
	e := newEdge(t)
	dir := filepath.Join(t.TempDir(), "connector")
	if _, _, err := pki.LoadIdentity(dir); !errors.Is(err, pki.ErrNoIdentity) {
		t.Fatalf("LoadIdentity of an empty dir = %v, want ErrNoIdentity", err)
	}

	cert, id := pkitest.Connector(t, e.ca, "site-a", time.Hour)
	der, key := cert.Certificate[0], cert.PrivateKey.(*ecdsa.PrivateKey)

	otherKey, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveIdentity(dir, der, otherKey, e.ca.Certificate()); err == nil {
		t.Error("SaveIdentity accepted a certificate for another key")
	}
	other := newEdge(t)
	if err := pki.SaveIdentity(dir, der, key, other.ca.Certificate()); err == nil {
		t.Error("SaveIdentity accepted a certificate of another CA")
	}
	if _, _, err := pki.LoadIdentity(dir); !errors.Is(err, pki.ErrNoIdentity) {
		t.Fatalf("a refused SaveIdentity left an identity behind: %v", err)
	}

	if err := pki.SaveIdentity(dir, der, key, e.ca.Certificate()); err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(dir, pki.ConnectorKeyFile), 0o600)
	checkMode(t, dir, 0o700)

	cert, caCert, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !caCert.Equal(e.ca.Certificate()) || pki.PinOf(caCert) != e.ca.Pin() {
		t.Error("LoadIdentity returned another CA")
	}
	if pki.ConnectorID(cert.Leaf) != id || !bytes.Equal(cert.Certificate[0], der) {
		t.Error("LoadIdentity returned another certificate")
	}

	// The loaded identity works for a real tunnel handshake.
	o := handshake(t, transports()[1], pki.ServerTLSConfig(e.ca, e.cert, nil), pki.ClientTLSConfig(caCert, e.ca.Pin(), &cert, nil))
	if o.serverErr != nil || o.clientErr != nil {
		t.Fatalf("handshake with the loaded identity: server: %v; client: %v", o.serverErr, o.clientErr)
	}
	if p, err := pki.PeerConnector(o.serverState); err != nil || pki.ConnectorID(p) != id {
		t.Errorf("edge saw connector %v, %v; want id %s", p, err, id)
	}

	if err := os.WriteFile(filepath.Join(dir, pki.ConnectorKeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = pki.LoadIdentity(dir)
	if err == nil || errors.Is(err, pki.ErrNoIdentity) || !strings.Contains(err.Error(), pki.ConnectorKeyFile) {
		t.Errorf("LoadIdentity with a damaged key = %v, want an error naming %s", err, pki.ConnectorKeyFile)
	}
}

// A connector killed in the middle of saving a renewed identity (a new key
// and its certificate, two files) loads a matching pair afterwards: the
// old one if the new certificate was not written yet, the new one if it
// was; never "enroll again".
func TestIdentitySurvivesACrashMidRenewal(t *testing.T) {
	e := newEdge(t)
	saved := func(name string) string {
		dir := filepath.Join(t.TempDir(), name)
		cert, _ := pkitest.Connector(t, e.ca, "site-a", time.Hour)
		if err := pki.SaveIdentity(dir, cert.Certificate[0], cert.PrivateKey.(*ecdsa.PrivateKey), e.ca.Certificate()); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	read := func(dir, name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write := func(dir, name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	next := pki.ConnectorKeyFile + ".next" // where SaveIdentity puts a new key first
	renewed := saved("renewed")
	newCert, newKey := read(renewed, pki.ConnectorCertFile), read(renewed, pki.ConnectorKeyFile)

	for _, tc := range []struct {
		name     string
		certDone bool // the new certificate was written before the kill
	}{
		{"killed before the certificate", false},
		{"killed before the key moved into place", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := saved("old")
			oldCert := read(dir, pki.ConnectorCertFile)
			write(dir, next, newKey)
			want := oldCert
			if tc.certDone {
				write(dir, pki.ConnectorCertFile, newCert)
				want = newCert
			}
			cert, _, err := pki.LoadIdentity(dir)
			if err != nil {
				t.Fatalf("LoadIdentity after a kill mid-save: %v", err)
			}
			pemCert, _ := x509.ParseCertificate(cert.Certificate[0])
			if got := read(dir, pki.ConnectorCertFile); !bytes.Equal(got, want) || pemCert == nil {
				t.Fatal("LoadIdentity changed the certificate")
			}
			if tc.certDone {
				// The save is finished: the key is in place.
				if got := read(dir, pki.ConnectorKeyFile); !bytes.Equal(got, newKey) {
					t.Error("the new key was not moved into place")
				}
				if _, err := os.Stat(filepath.Join(dir, next)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s is still there: %v", next, err)
				}
				if _, _, err := pki.LoadIdentity(dir); err != nil {
					t.Errorf("a second load: %v", err)
				}
			}
		})
	}
}
