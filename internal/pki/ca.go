// Package pki holds the edge's certificate authority, the certificates it
// issues, and the TLS 1.3 configurations both roles build on them.
//
// The edge keeps one CA in its data directory and signs with it its own
// server certificate and one client certificate per enrolled connector:
//
//	ca, err := pki.LoadOrCreateCA(dataDir, time.Now())
//	srv, err := pki.NewServerCerts(dataDir, ca, []string{"edge.example.com"}, time.Now, nil)
//	ln := tls.NewListener(tcpLn, srv.TLSConfig(nil)) // reissued before it expires
//	...
//	leaf, err := pki.PeerConnector(conn.ConnectionState()) // tunnel: who is this?
//	id := pki.ConnectorID(leaf)                            // check it against revocations
//
// A connector identity keeps its id across certificates: SignConnector
// makes the first, RenewConnector the next ones (a new key each time, once
// RenewAt has passed), and ConnectorID reads the id from any of them.
//
// A connector knows the CA only by its pin (see PinOf) from its keyfile.
// It enrolls over EnrollTLSConfig, which accepts the edge only if it presents
// the pinned CA, sends a CSR made with NewKey and NewCSR, saves what it gets
// back with SaveIdentity, and from then on dials with ClientTLSConfig built
// from LoadIdentity.
//
// All keys are ECDSA P-256. Functions in this package are safe for
// concurrent use; a *CA is read-only once loaded.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// File names inside the edge's data directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

const (
	// caValidity is how long a new CA certificate is valid.
	caValidity = 10 * 365 * 24 * time.Hour
	// ClockSkew backdates every certificate so that a peer whose clock is a
	// little behind still accepts it: the clock skew sallyport tolerates.
	ClockSkew = 5 * time.Minute
	// maxCommonName is the X.509 upper bound on a common name (RFC 5280).
	maxCommonName = 64
)

// ErrBadCSR is wrapped by SignConnector when the certificate request cannot
// be used: unparsable, badly signed or with an unsupported key.
var ErrBadCSR = errors.New("bad certificate request")

// CA is the edge's certificate authority. It is created by LoadOrCreateCA;
// the zero value is not usable. A CA is immutable and safe for concurrent
// use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Certificate returns the CA's certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pin returns the CA's pin, which keyfiles carry (see PinOf).
func (ca *CA) Pin() string { return PinOf(ca.cert) }

// LoadOrCreateCA loads the CA from ca.crt and ca.key in dir, or creates a new
// one there when neither file exists (creating dir with mode 0700; the key
// is written with mode 0600). A damaged or half-present pair is an error
// naming the file: it is never replaced silently, because every enrolled
// connector trusts only this CA.
func LoadOrCreateCA(dir string, now time.Time) (*CA, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	haveCert, err := fileExists(certPath)
	if err != nil {
		return nil, fmt.Errorf("load edge CA: %w", err)
	}
	haveKey, err := fileExists(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load edge CA: %w", err)
	}
	switch {
	case haveCert && haveKey:
		return loadCA(certPath, keyPath, now)
	case haveCert:
		return nil, fmt.Errorf("load edge CA: %s exists but %s is missing: restore the key from a backup "+
			"(or move both files aside to make a new CA, after which every connector must enroll again)", certPath, keyPath)
	case haveKey:
		return nil, fmt.Errorf("load edge CA: %s exists but %s is missing: restore the certificate from a backup "+
			"(or move both files aside to make a new CA, after which every connector must enroll again)", keyPath, certPath)
	}
	return createCA(dir, certPath, keyPath, now)
}

func loadCA(certPath, keyPath string, now time.Time) (*CA, error) {
	cert, err := readCertFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load edge CA: %w", err)
	}
	key, err := readKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load edge CA: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("load edge CA: %s is not a CA certificate: restore the edge's own ca.crt", certPath)
	}
	if !keyMatchesCert(key, cert) {
		return nil, fmt.Errorf("load edge CA: %s does not belong to the certificate in %s: restore the matching pair", keyPath, certPath)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("load edge CA: the CA in %s expired on %s: move ca.crt and ca.key aside to make a new CA, "+
			"then enroll every connector again", certPath, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return &CA{cert: cert, key: key}, nil
}

func createCA(dir, certPath, keyPath string, now time.Time) (*CA, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	shortID := make([]byte, 4)
	if _, err := rand.Read(shortID); err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "sallyport edge CA " + hex.EncodeToString(shortID)},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs leaves only, never another CA
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	// Key first: a crash between the two writes leaves a key without a
	// certificate, which LoadOrCreateCA reports instead of overwriting.
	if err := atomicfile.Write(keyPath, keyPEM, keyMode); err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	if err := atomicfile.Write(certPath, encodeCert(der), certMode); err != nil {
		return nil, fmt.Errorf("create edge CA: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

// SignConnector issues a new connector identity's client certificate from
// a PKCS #10 request. It checks the request's signature (so the requester
// holds the key) and ignores everything else in the request: the subject's
// common name is name, the serial is 128 random bits, the certificate
// serves TLS client authentication only and is valid from now-5m to
// now+ttl (cut at the CA's own expiry). The identity's id is the first
// certificate's serial in hex, and the certificate carries it as a URI
// (see ConnectorID), so that renewed certificates keep it.
// Errors about the request wrap ErrBadCSR.
func (ca *CA) SignConnector(csrDER []byte, name string, now time.Time, ttl time.Duration) (certDER []byte, id string, err error) {
	return ca.signConnector(csrDER, name, "", now, ttl)
}

// RenewConnector issues a new certificate for the existing connector
// identity id, as SignConnector does (a new serial, a new validity) but
// carrying id, so that ConnectorID of the new certificate is id.
func (ca *CA) RenewConnector(csrDER []byte, name, id string, now time.Time, ttl time.Duration) (certDER []byte, err error) {
	if !validConnectorID(id) {
		return nil, fmt.Errorf("renew connector certificate %q: bad connector id %q", name, id)
	}
	certDER, _, err = ca.signConnector(csrDER, name, id, now, ttl)
	return certDER, err
}

// signConnector signs for identity id, or for a new one named by the
// serial when id is empty.
func (ca *CA) signConnector(csrDER []byte, name, id string, now time.Time, ttl time.Duration) (certDER []byte, _ string, err error) {
	if name == "" || len(name) > maxCommonName {
		return nil, "", fmt.Errorf("sign connector certificate: name must be 1 to %d bytes, got %d", maxCommonName, len(name))
	}
	if ttl <= 0 {
		return nil, "", fmt.Errorf("sign connector certificate %q: validity must be positive, got %v", name, ttl)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, "", fmt.Errorf("sign connector certificate %q: %w: %w", name, ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("sign connector certificate %q: %w: signature does not verify: %w", name, ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, "", fmt.Errorf("sign connector certificate %q: %w: want an ECDSA P-256 key, got %T", name, ErrBadCSR, csr.PublicKey)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, "", fmt.Errorf("sign connector certificate %q: %w", name, err)
	}
	if id == "" {
		id = serialID(serial)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter // a leaf cannot outlive its CA usefully
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{{Scheme: "urn", Opaque: connectorURNPrefix + id}},
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, "", fmt.Errorf("sign connector certificate %q: %w", name, err)
	}
	return certDER, id, nil
}

// connectorURNPrefix starts the URI a connector certificate carries its
// identity's id in: urn:sallyport:connector:<id>.
const connectorURNPrefix = "sallyport:connector:"

// ConnectorID returns the identifier of a connector certificate: the id
// its urn:sallyport:connector: URI carries (the same in every certificate
// of one identity, renewed or not), or, for a certificate issued before
// renewal existed, which has no such URI, its serial number in lowercase
// hex. Ids are 32 hex digits.
func ConnectorID(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if u.Scheme == "urn" && strings.HasPrefix(u.Opaque, connectorURNPrefix) {
			if id := strings.TrimPrefix(u.Opaque, connectorURNPrefix); validConnectorID(id) {
				return id
			}
		}
	}
	return serialID(cert.SerialNumber)
}

// validConnectorID reports whether id looks like the ids SignConnector
// makes: 32 lowercase hex digits.
func validConnectorID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func serialID(serial *big.Int) string { return fmt.Sprintf("%032x", serial) }

// randomSerial returns a positive, non-zero 128-bit serial number.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		n := new(big.Int).SetBytes(b)
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// NewKey makes a new ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA P-256 key: %w", err)
	}
	return key, nil
}

// NewKeyAndCSR makes a connector's half of enrollment: a new key (NewKey)
// and a certificate request for it (NewCSR).
func NewKeyAndCSR(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := NewCSR(key, name)
	if err != nil {
		return nil, nil, err
	}
	return key, csr, nil
}

// NewCSR returns a DER PKCS #10 certificate request for key, with name as
// the subject's common name. The edge decides the name it certifies; the
// one in the request is informative only.
func NewCSR(key *ecdsa.PrivateKey, name string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request for %q: %w", name, err)
	}
	return der, nil
}
