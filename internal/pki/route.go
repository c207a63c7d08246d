package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// File names of a cluster member's route certificate inside its pki
// directory (next to ca.crt).
const (
	RouteCertFile = "route.crt"
	RouteKeyFile  = "route.key"
)

// RouteValidity is how long a route certificate LoadOrIssueRoute issues is
// valid. An edge reissues its own at a start past two thirds of it.
const RouteValidity = 365 * 24 * time.Hour

// routeURNPrefix starts the URI a route certificate carries its member's
// name in: urn:sallyport:route:<name>. It is what tells a cluster member
// from a connector or an edge's tunnel certificate, which the same CA
// signs: only a certificate with it may form a route.
const routeURNPrefix = "sallyport:route:"

// SignRoute issues the certificate of a cluster member (an edge's or a
// witness's embedded NATS server) from a PKCS #10 request: its common
// name is name, its subject alternative names are hosts (IP addresses as
// IP SANs, the rest as DNS names; no ports), it serves both TLS server
// and client authentication (a route is dialled by either side), and it
// carries urn:sallyport:route:<name>, without which RouteTLSConfig refuses
// a peer. It is valid from now-5m to now+ttl, cut at the CA's expiry.
// Errors about the request wrap ErrBadCSR.
func (ca *CA) SignRoute(csrDER []byte, name string, hosts []string, now time.Time, ttl time.Duration) (certDER []byte, err error) {
	if name == "" || len(name) > maxCommonName || strings.ContainsAny(name, " /:") {
		return nil, fmt.Errorf("sign route certificate: name must be 1 to %d bytes without spaces, '/' or ':', got %q", maxCommonName, name)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("sign route certificate %q: validity must be positive, got %v", name, ttl)
	}
	dnsNames, ips, err := splitNames(hosts)
	if err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w", name, err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w: %w", name, ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w: signature does not verify: %w", name, ErrBadCSR, err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("sign route certificate %q: %w: want an ECDSA P-256 key, got %T", name, ErrBadCSR, csr.PublicKey)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w", name, err)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		URIs:                  []*url.URL{{Scheme: "urn", Opaque: routeURNPrefix + name}},
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w", name, err)
	}
	return certDER, nil
}

// LoadOrIssueRoute returns the route certificate of an edge that holds the
// CA key, from route.crt and route.key in dir (the edge's pki directory),
// issuing a new one (RouteValidity, key mode 0600) when there is none,
// when it is damaged, not issued by ca, for another name or other hosts,
// or past two thirds of its life; dir is created (mode 0700) if missing.
// The chain is the leaf and the CA.
func LoadOrIssueRoute(dir string, ca *CA, name string, hosts []string, now time.Time) (tls.Certificate, error) {
	dnsNames, ips, err := splitNames(hosts)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("route certificate: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, RouteCertFile), filepath.Join(dir, RouteKeyFile)
	if cert, key, err := readPair(certPath, keyPath); err == nil &&
		cert.CheckSignatureFrom(ca.cert) == nil &&
		cert.Subject.CommonName == name && routeName(cert) == name &&
		now.Before(RenewAt(cert)) && sameNames(cert, dnsNames, ips) {
		return routeCert(cert, key, ca.cert), nil
	}
	key, csr, err := NewKeyAndCSR(name)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue route certificate: %w", err)
	}
	der, err := ca.SignRoute(csr, name, hosts, now, RouteValidity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue route certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue route certificate: %w", err)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return tls.Certificate{}, fmt.Errorf("issue route certificate: %w", err)
	}
	// Key first: a crash between the two leaves a key that does not fit
	// the old certificate, which the next start reissues.
	if err := atomicfile.Write(keyPath, keyPEM, keyMode); err != nil {
		return tls.Certificate{}, fmt.Errorf("issue route certificate: %w", err)
	}
	if err := atomicfile.Write(certPath, encodeCert(der), certMode); err != nil {
		return tls.Certificate{}, fmt.Errorf("issue route certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue route certificate: %w", err)
	}
	return routeCert(cert, key, ca.cert), nil
}

// LoadRoute reads a witness's route identity from dir (its pki
// directory), where the join flow placed it: route.crt, route.key and the
// edge CA's ca.crt. It returns the certificate (with the CA in its chain)
// and the CA certificate, for RouteTLSConfig. A missing, damaged,
// mismatched, foreign or expired file is an error naming it.
func LoadRoute(dir string) (tls.Certificate, *x509.Certificate, error) {
	return loadRoute(dir, time.Now())
}

func loadRoute(dir string, now time.Time) (tls.Certificate, *x509.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, RouteCertFile), filepath.Join(dir, RouteKeyFile)
	caPath := filepath.Join(dir, CACertFile)
	caCert, err := readCertFile(caPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load route certificate: %w; join the cluster first", err)
	}
	cert, key, err := readPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load route certificate: %w; join the cluster again", err)
	}
	if err := cert.CheckSignatureFrom(caCert); err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load route certificate: %s is not signed by the CA in %s: join the cluster again", certPath, caPath)
	}
	if routeName(cert) == "" {
		return tls.Certificate{}, nil, fmt.Errorf("load route certificate: %s is not a route certificate (no %s URI): join the cluster again", certPath, "urn:"+routeURNPrefix)
	}
	if now.After(cert.NotAfter) {
		return tls.Certificate{}, nil, fmt.Errorf("load route certificate: %s expired on %s: join the cluster again", certPath, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return routeCert(cert, key, caCert), caCert, nil
}

// readPair reads a certificate and the key that belongs to it.
func readPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, err := readCertFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	key, err := readKeyFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	if !keyMatchesCert(key, cert) {
		return nil, nil, fmt.Errorf("%s does not belong to %s", keyPath, certPath)
	}
	return cert, key, nil
}

func routeCert(cert *x509.Certificate, key *ecdsa.PrivateKey, caCert *x509.Certificate) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw, caCert.Raw}, PrivateKey: key, Leaf: cert}
}

// routeName returns the member name a route certificate carries, or ""
// when cert is not a route certificate.
func routeName(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if u.Scheme == "urn" && strings.HasPrefix(u.Opaque, routeURNPrefix) {
			return strings.TrimPrefix(u.Opaque, routeURNPrefix)
		}
	}
	return ""
}

// RouteTLSConfig returns the TLS 1.3 configuration of the embedded NATS
// server's cluster port, used both to accept routes and to dial them:
// each side presents cert and accepts the other only if the other's
// certificate chains to caCert (the edge CA, the only root) and is a route
// certificate (SignRoute: both key usages and the route URI). So neither a
// connector's certificate nor an edge's tunnel certificate, both from the
// same CA, can form a route, and nothing from another CA can. Host names
// are not checked, for the reason ClientTLSConfig gives: the CA is
// private and issues route certificates to cluster members only.
func RouteTLSConfig(caCert *x509.Certificate, cert tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		RootCAs:      pool,
		// Verification is not skipped: VerifyConnection does it on both
		// sides, against caCert only and without a host name.
		InsecureSkipVerify:     true,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyRoutePeer(cs.PeerCertificates, caCert)
		},
	}
}

// verifyRoutePeer checks that certs (a peer's chain) is a route
// certificate issued by caCert.
func verifyRoutePeer(certs []*x509.Certificate, caCert *x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("cluster route: the peer presented no certificate")
	}
	leaf := certs[0]
	if err := verifyLeaf(certs, caCert); err != nil {
		return fmt.Errorf("cluster route: peer %q is not a member of this cluster (its certificate does not verify against the edge CA): %w", leaf.Subject.CommonName, err)
	}
	if routeName(leaf) == "" || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return fmt.Errorf("cluster route: peer %q presented a certificate of the edge CA that is not a route certificate (a connector's or a tunnel's?): refused", leaf.Subject.CommonName)
	}
	return nil
}
