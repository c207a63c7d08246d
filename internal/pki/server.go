package pki

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// File names of the edge's own server certificate inside its data directory.
const (
	EdgeCertFile = "edge.crt"
	EdgeKeyFile  = "edge.key"
)

const (
	// serverValidity is how long a new edge server certificate is valid.
	serverValidity = 365 * 24 * time.Hour
	// serverRenewBefore is how close to expiry a server certificate is
	// reissued: at the next start, or by ServerCerts while the edge runs.
	serverRenewBefore = 30 * 24 * time.Hour
)

// LoadOrCreateServerCert returns the edge's TLS server certificate from
// edge.crt and edge.key in dir, issuing a new one from ca when none exists,
// when the one on disk expires within 30 days, when it was not issued by ca,
// or when its names differ from names. names are host names or IP addresses
// (no ports); localhost, 127.0.0.1 and ::1 are always added. A new
// certificate is valid for a year, serves TLS server authentication only, and
// its key is written with mode 0600.
//
// The returned chain is the leaf followed by the CA certificate: a connector
// that is enrolling knows the CA only by its pin and finds it in the chain.
func LoadOrCreateServerCert(dir string, ca *CA, names []string, now time.Time) (tls.Certificate, error) {
	dnsNames, ips, err := splitServerNames(names)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("edge server certificate: %w", err)
	}
	certPath := filepath.Join(dir, EdgeCertFile)
	keyPath := filepath.Join(dir, EdgeKeyFile)

	haveCert, err := fileExists(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("edge server certificate: %w", err)
	}
	haveKey, err := fileExists(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("edge server certificate: %w", err)
	}
	if haveCert && haveKey {
		cert, err := readCertFile(certPath)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("edge server certificate: %w (or delete %s and %s to issue a new one)", err, certPath, keyPath)
		}
		key, err := readKeyFile(keyPath)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("edge server certificate: %w (or delete %s and %s to issue a new one)", err, certPath, keyPath)
		}
		if keyMatchesCert(key, cert) &&
			cert.CheckSignatureFrom(ca.cert) == nil &&
			cert.NotAfter.Sub(now) > serverRenewBefore &&
			sameNames(cert, dnsNames, ips) {
			return tls.Certificate{
				Certificate: [][]byte{cert.Raw, ca.cert.Raw},
				PrivateKey:  key,
				Leaf:        cert,
			}, nil
		}
	}
	return issueServerCert(certPath, keyPath, ca, dnsNames, ips, now)
}

func issueServerCert(certPath, keyPath string, ca *CA, dnsNames []string, ips []net.IP, now time.Time) (tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue edge server certificate: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue edge server certificate: %w", err)
	}
	notAfter := now.Add(serverValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: dnsNames[0]},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue edge server certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue edge server certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue edge server certificate: %w", err)
	}
	if err := atomicfile.Write(keyPath, keyPEM, keyMode); err != nil {
		return tls.Certificate{}, fmt.Errorf("issue edge server certificate: %w", err)
	}
	if err := atomicfile.Write(certPath, encodeCert(der), certMode); err != nil {
		return tls.Certificate{}, fmt.Errorf("issue edge server certificate: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{der, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	}, nil
}

// splitServerNames sorts names into DNS names and IP addresses, adds the
// defaults, and drops duplicates. The first DNS name is the given one that
// came first, or "localhost".
func splitServerNames(names []string) (dnsNames []string, ips []net.IP, err error) {
	// localhost and the loopback addresses are always named, so that local
	// tools and tests can reach the edge.
	return splitNames(append(slices.Clone(names), "localhost", "127.0.0.1", "::1"))
}

// splitNames sorts names into DNS names and IP addresses, dropping
// duplicates and empty entries; a name with a port or scheme is an error.
func splitNames(names []string) (dnsNames []string, ips []net.IP, err error) {
	var errs []error
	seenDNS := map[string]bool{}
	seenIP := map[string]bool{}
	for _, raw := range names {
		name := strings.TrimSpace(raw)
		if name == "" {
			continue
		}
		if ip := net.ParseIP(strings.Trim(name, "[]")); ip != nil {
			if ip4 := ip.To4(); ip4 != nil {
				ip = ip4
			}
			if !seenIP[ip.String()] {
				seenIP[ip.String()] = true
				ips = append(ips, ip)
			}
			continue
		}
		if strings.ContainsAny(name, ":/ \t[]") {
			errs = append(errs, fmt.Errorf("server name %q: give a host name or an IP address, without port or scheme", raw))
			continue
		}
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		if !seenDNS[name] {
			seenDNS[name] = true
			dnsNames = append(dnsNames, name)
		}
	}
	return dnsNames, ips, errors.Join(errs...)
}

// sameNames reports whether cert names exactly dnsNames and ips, in any
// order.
func sameNames(cert *x509.Certificate, dnsNames []string, ips []net.IP) bool {
	if len(cert.DNSNames) != len(dnsNames) || len(cert.IPAddresses) != len(ips) {
		return false
	}
	for _, n := range dnsNames {
		if !slices.Contains(cert.DNSNames, n) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// ServerCerts keeps the edge's server certificate current while the edge
// runs, not only at its start: GetCertificate reissues it, as
// LoadOrCreateServerCert does at a start, once it expires within 30 days.
// Make it with NewServerCerts; it is safe for concurrent use.
type ServerCerts struct {
	dir   string
	ca    *CA
	names []string
	now   func() time.Time
	// renewed, when not nil, is told of each reissue (err nil) or failed
	// attempt (the old certificate is kept while it is valid).
	renewed func(leaf *x509.Certificate, err error)

	// mu guards cert, the certificate served now.
	mu   sync.Mutex
	cert tls.Certificate
}

// NewServerCerts loads or issues the server certificate with
// LoadOrCreateServerCert, and returns a ServerCerts that serves it and
// reissues it before it expires, by the clock now. renewed may be nil.
func NewServerCerts(dir string, ca *CA, names []string, now func() time.Time, renewed func(leaf *x509.Certificate, err error)) (*ServerCerts, error) {
	cert, err := LoadOrCreateServerCert(dir, ca, names, now())
	if err != nil {
		return nil, err
	}
	return &ServerCerts{dir: dir, ca: ca, names: slices.Clone(names), now: now, renewed: renewed, cert: cert}, nil
}

// GetCertificate returns the certificate to serve, reissuing it first if
// it expires within 30 days; it fits tls.Config.GetCertificate. If the
// reissue fails, the current certificate is served while it is valid, and
// the next handshake tries again.
func (s *ServerCerts) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.cert.Leaf.NotAfter.Sub(now) > serverRenewBefore {
		c := s.cert
		return &c, nil
	}
	cert, err := LoadOrCreateServerCert(s.dir, s.ca, s.names, now)
	if s.renewed != nil {
		s.renewed(cert.Leaf, err)
	}
	if err != nil {
		if now.After(s.cert.Leaf.NotAfter) {
			return nil, err
		}
		c := s.cert
		return &c, nil
	}
	s.cert = cert
	return &cert, nil
}

// TLSConfig returns ServerTLSConfig serving the certificate GetCertificate
// returns.
func (s *ServerCerts) TLSConfig(nextProtos []string) *tls.Config {
	s.mu.Lock()
	cfg := ServerTLSConfig(s.ca, s.cert, nextProtos)
	s.mu.Unlock()
	cfg.Certificates = nil
	cfg.GetCertificate = s.GetCertificate
	cfg.Time = s.now
	return cfg
}
