package testnet_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
)

// certs makes a CA and certificates signed by it, as PEM files in dir.
type certs struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
	pool   *x509.CertPool
	serial int64
}

func newCerts(t *testing.T, name string) *certs {
	t.Helper()
	c := &certs{dir: t.TempDir(), serial: 1}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c.ca, _ = x509.ParseCertificate(der)
	c.caKey = key
	c.caFile = filepath.Join(c.dir, "ca.pem")
	os.WriteFile(c.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	c.pool = x509.NewCertPool()
	c.pool.AddCert(c.ca)
	return c
}

// issue signs a certificate for names (server) or for a client (names[0]
// as its common name), writes it and its key as file+".crt" and
// file+".key", and returns the pair, its serial and the tls.Certificate.
func (c *certs) issue(t *testing.T, file string, client bool, names ...string) (config.CertificateFiles, int64, tls.Certificate) {
	t.Helper()
	c.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(c.serial), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.DNSNames = names
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	f := config.CertificateFiles{Cert: filepath.Join(c.dir, file+".crt"), Key: filepath.Join(c.dir, file+".key")}
	// Write the key first and the certificate last, by rename, as a
	// careful operator (or certbot) would.
	for _, w := range []struct {
		path string
		data []byte
	}{{f.Key, keyPEM}, {f.Cert, certPEM}} {
		tmp := w.path + ".tmp"
		if err := os.WriteFile(tmp, w.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, w.path); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return f, c.serial, pair
}

// servedSerial returns the serial of the certificate an https listener
// serves for serverName.
func servedSerial(t *testing.T, addr, serverName string, pool *x509.CertPool) int64 {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: serverName, RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS to %s as %s: %v", addr, serverName, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// closedWithin reads from c until the peer closes it (a FIN or a reset,
// as when the edge drops unread bytes), up to 5s, and returns what came.
func closedWithin(c net.Conn) ([]byte, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if errors.Is(err, syscall.ECONNRESET) {
		err = nil
	}
	return b, err
}
