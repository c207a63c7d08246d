package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"
)

// SignRoute issues a cluster member's route certificate from a PKCS #10
// request: the certificate of its NATS cluster port, which it presents
// both when it accepts a route and when it dials one, so it serves TLS
// server and client authentication. The common name is name, the subject
// alternative names are hosts (host names or IP addresses, no ports), the
// validity now-5m to now+ttl, cut at the CA's own expiry. Only the
// request's key is used, after its signature is checked; errors about the
// request wrap ErrBadCSR.
func (ca *CA) SignRoute(csrDER []byte, name string, hosts []string, now time.Time, ttl time.Duration) (certDER []byte, err error) {
	if name == "" || len(name) > maxCommonName {
		return nil, fmt.Errorf("sign route certificate: name must be 1 to %d bytes, got %d", maxCommonName, len(name))
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("sign route certificate %q: validity must be positive, got %v", name, ttl)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("sign route certificate %q: no host: the other members must reach it by a name the certificate holds", name)
	}
	dnsNames, ips, err := splitNames(hosts)
	if err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w", name, err)
	}
	pub, err := csrKey(csrDER)
	if err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w", name, err)
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
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign route certificate %q: %w", name, err)
	}
	return certDER, nil
}
