package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// pinPrefix names the hash algorithm of a pin, as kubeadm's
// --discovery-token-ca-cert-hash does.
const pinPrefix = "sha256:"

// ErrBadPin is wrapped by ParsePin when a pin's text is malformed.
var ErrBadPin = errors.New("malformed CA pin")

// PinOf returns the pin of cert: "sha256:" followed by the lowercase hex
// SHA-256 of the certificate's DER SubjectPublicKeyInfo. The pin names the
// CA's key, not one certificate, so a CA certificate re-signed with the same
// key keeps its pin.
func PinOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:])
}

// ParsePin checks that s has the form "sha256:<64 hex digits>" and returns
// the 32-byte digest. Hex digits may be upper or lower case.
func ParsePin(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, pinPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: %q does not start with %q: copy the whole pin, e.g. sha256:3f2a…", ErrBadPin, abbreviate(s), pinPrefix)
	}
	if len(rest) != 2*sha256.Size {
		return nil, fmt.Errorf("%w: want %d hex digits after %q, got %d characters", ErrBadPin, 2*sha256.Size, pinPrefix, len(rest))
	}
	sum, err := hex.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: the digest after %q is not hex", ErrBadPin, pinPrefix)
	}
	return sum, nil
}

// pinMatches reports whether cert's pin equals the pin text want.
// A malformed want is an error rather than a mismatch.
func pinMatches(cert *x509.Certificate, want string) (bool, error) {
	sum, err := ParsePin(want)
	if err != nil {
		return false, err
	}
	got := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return bytes.Equal(sum, got[:]), nil
}

// abbreviate shortens s for an error message so that a pasted blob does not
// flood the terminal.
func abbreviate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// PinMismatchError reports that the edge presented a CA other than the one
// the connector's keyfile names. The connector sees it as the error of its
// TLS handshake (crypto/tls returns the verification callback's error as it
// is, so errors.As works on the result of Handshake, HandshakeContext and
// tls.Dialer.DialContext).
type PinMismatchError struct {
	// Want is the pin the keyfile (or the connector's saved identity) expects.
	Want string
	// Got is the pin of the topmost certificate the edge presented: its CA
	// when it is a sallyport edge.
	Got string
}

// Error says what differs and what to do next.
func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("edge CA pin mismatch: the keyfile expects %s but the edge presented %s, "+
		"so the keyfile was made for another edge (or the connection is being intercepted): "+
		"get a new keyfile from this edge's operator", e.Want, e.Got)
}

// KeyPinOfCSR returns the pin (as PinOf) of the key a certificate request
// is for, once its signature shows the requester holds that key.
func KeyPinOfCSR(csrDER []byte) (string, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return "", fmt.Errorf("%w: signature does not verify: %w", ErrBadCSR, err)
	}
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return pinPrefix + hex.EncodeToString(sum[:]), nil
}
