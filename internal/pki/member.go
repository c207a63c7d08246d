package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// MarshalKey returns the CA's private key as PKCS #8 DER, for a joining
// edge (package join): whoever holds it can issue certificates every
// member and connector of the cluster trusts. Never log it.
func (ca *CA) MarshalKey() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("encode the CA key: %w", err)
	}
	return der, nil
}

// Member is what a new cluster member receives when it joins: the CA, its
// key for an edge, and the member's route certificate and key.
type Member struct {
	// CA is the cluster's CA certificate.
	CA *x509.Certificate
	// CAKey is the CA's private key (PKCS #8 DER); nil for a witness.
	CAKey []byte
	// Route is the member's route certificate (DER), signed by CA.
	Route []byte
	// RouteKey is the private key of Route.
	RouteKey *ecdsa.PrivateKey
}

// Check verifies that m holds together: CAKey (if any) is CA's key, and
// Route is CA's certificate for RouteKey, valid for TLS server and client
// authentication. It returns the parsed route certificate.
func (m Member) Check() (*x509.Certificate, error) {
	if m.CA == nil || !m.CA.IsCA || !m.CA.BasicConstraintsValid {
		return nil, errors.New("the CA certificate is not a CA")
	}
	if m.CAKey != nil {
		key, err := parseECKey(m.CAKey)
		if err != nil {
			return nil, fmt.Errorf("the CA key: %w", err)
		}
		if !keyMatchesCert(key, m.CA) {
			return nil, errors.New("the CA key does not belong to the CA certificate")
		}
	}
	route, err := x509.ParseCertificate(m.Route)
	if err != nil {
		return nil, fmt.Errorf("the route certificate: %w", err)
	}
	if m.RouteKey == nil || !keyMatchesCert(m.RouteKey, route) {
		return nil, errors.New("the route certificate is not for this member's key")
	}
	roots := x509.NewCertPool()
	roots.AddCert(m.CA)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := route.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{eku}, CurrentTime: route.NotBefore.Add(ClockSkew)}); err != nil {
			return nil, fmt.Errorf("the route certificate does not verify against the CA: %w", err)
		}
	}
	return route, nil
}

// parseECKey parses a PKCS #8 DER ECDSA private key.
func parseECKey(der []byte) (*ecdsa.PrivateKey, error) {
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, want an ECDSA key", parsed)
	}
	return key, nil
}

// SaveMember checks m (Member.Check) and writes it into dir (created with
// mode 0700): route.key and ca.key with mode 0600, route.crt and ca.crt.
// ca.crt comes last: a directory without it has not joined, one with it
// has (see JoinState). A CA already in dir must be m's (JoinState first).
func SaveMember(dir string, m Member) error {
	if _, err := m.Check(); err != nil {
		return fmt.Errorf("save the cluster's certificates: %w", err)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("save the cluster's certificates: %w", err)
	}
	routeKey, err := encodeKey(m.RouteKey)
	if err != nil {
		return fmt.Errorf("save the cluster's certificates: %w", err)
	}
	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	files := []file{{RouteKeyFile, routeKey, keyMode}, {RouteCertFile, encodeCert(m.Route), certMode}}
	if m.CAKey != nil {
		files = append(files, file{CAKeyFile, pemKey(m.CAKey), keyMode})
	}
	files = append(files, file{CACertFile, encodeCert(m.CA.Raw), certMode})
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save the cluster's certificates: %w", err)
		}
	}
	return nil
}

// ErrOtherCA is wrapped by JoinState when dir holds a CA other than the
// cluster's.
var ErrOtherCA = errors.New("the data directory has a CA of its own")

// JoinState says whether the pki directory dir has joined the cluster
// whose CA has pin: joined when its ca.crt has that pin and its route
// certificate and key are there (and, with needKey, ca.key too); not
// joined, and free to, when it has no CA. A CA of another pin is an error
// wrapping ErrOtherCA: joining would replace the CA that every connector
// enrolled there trusts.
func JoinState(dir, pin string, needKey bool) (joined bool, err error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(dir, CAKeyFile)
	haveCert, err := fileExists(certPath)
	if err != nil {
		return false, err
	}
	haveKey, err := fileExists(keyPath)
	if err != nil {
		return false, err
	}
	if !haveCert {
		if haveKey {
			return false, fmt.Errorf("%w: %s exists without %s: this directory belonged to an edge; use a new data directory to join", ErrOtherCA, keyPath, certPath)
		}
		return false, nil
	}
	cert, err := readCertFile(certPath)
	if err != nil {
		return false, err
	}
	if match, err := pinMatches(cert, pin); err != nil {
		return false, err
	} else if !match {
		return false, fmt.Errorf("%w (%s, pin %s), not the cluster's (pin %s): joining would replace it, and every connector enrolled with it would be refused; use a new data directory to join",
			ErrOtherCA, certPath, PinOf(cert), pin)
	}
	for _, p := range []string{filepath.Join(dir, RouteCertFile), filepath.Join(dir, RouteKeyFile)} {
		if ok, err := fileExists(p); err != nil || !ok {
			return false, err
		}
	}
	if needKey && !haveKey {
		return false, fmt.Errorf("%s has the cluster's CA but not its key %s: it joined as a witness; an edge needs a data directory joined with an edge's join keyfile", dir, keyPath)
	}
	return true, nil
}
