package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// ErrNoClientCert is returned by PeerConnector when the peer presented no
// client certificate: it has not enrolled yet, or it is not a connector.
var ErrNoClientCert = errors.New("no client certificate: enroll first")

// ServerTLSConfig returns the TLS 1.3 configuration of the edge's tunnel
// port. A client certificate is optional at the TLS level, because the same
// port serves enrollment, where the connector has no certificate yet; but a
// certificate that is presented must chain to ca and allow client
// authentication, or the handshake fails. The tunnel protocol must call
// PeerConnector to require one.
//
// Session tickets are off: tunnels are long-lived, and without resumption
// every connection's client certificate is verified afresh.
func ServerTLSConfig(ca *CA, serverCert tls.Certificate, nextProtos []string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{serverCert},
		ClientAuth:             tls.VerifyClientCertIfGiven,
		ClientCAs:              pool,
		NextProtos:             slices.Clone(nextProtos),
		SessionTicketsDisabled: true,
	}
}

// PeerConnector returns the verified client certificate of a connection
// accepted with ServerTLSConfig, or an error wrapping ErrNoClientCert when
// the peer presented none.
func PeerConnector(cs tls.ConnectionState) (*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, ErrNoClientCert
	}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		// Only a config that skips client verification gets here.
		return nil, fmt.Errorf("identify connector: its certificate %q was not verified against the edge CA", cs.PeerCertificates[0].Subject.CommonName)
	}
	return cs.VerifiedChains[0][0], nil
}

// ClientTLSConfig returns the TLS 1.3 configuration a connector dials its
// edge with: it presents clientCert (when not nil) and accepts the edge only
// if the edge's chain verifies against caCert for server authentication and
// caCert's pin equals pin. An edge presenting another CA fails the handshake
// with a *PinMismatchError (errors.As works on the handshake's error).
//
// No host name is checked, and that is safe here: caCert is the edge's
// private CA, not a public one, and it issues server-authentication
// certificates only to edges (LoadOrCreateServerCert); the certificates it
// issues to connectors carry client authentication only, which chain
// verification below rejects for a server. So whoever completes the
// handshake holds the key of a certificate this CA issued to an edge of this
// deployment, whatever address the connector dialled. Checking names would
// only break connectors that reach an edge through an address the edge's
// certificate does not list (a NAT, a load balancer, a new DNS name).
func ClientTLSConfig(caCert *x509.Certificate, pin string, clientCert *tls.Certificate, nextProtos []string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: slices.Clone(nextProtos),
		// Verification is not skipped: VerifyConnection below does it, with
		// the private CA as the only root and without a host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyEdge(cs.PeerCertificates, caCert, pin)
		},
	}
	if clientCert != nil {
		cfg.Certificates = []tls.Certificate{*clientCert}
	}
	return cfg
}

// verifyEdge checks that the edge's chain certs verifies against caCert for
// server authentication, and that caCert's pin is pin.
func verifyEdge(certs []*x509.Certificate, caCert *x509.Certificate, pin string) error {
	if len(certs) == 0 {
		return errors.New("verify edge: the edge presented no certificate")
	}
	if _, err := ParsePin(pin); err != nil {
		return fmt.Errorf("verify edge: %w", err)
	}
	if err := verifyLeaf(certs, caCert); err != nil {
		// Tell "another CA" apart from "right CA, bad certificate": the
		// first means the keyfile does not belong to this edge.
		top := certs[len(certs)-1]
		if match, _ := pinMatches(top, pin); !match {
			return &PinMismatchError{Want: pin, Got: PinOf(top)}
		}
		return fmt.Errorf("verify edge certificate: %w", err)
	}
	if err := notRoute(certs[0]); err != nil {
		return err
	}
	match, err := pinMatches(caCert, pin)
	if err != nil {
		return fmt.Errorf("verify edge: %w", err)
	}
	if !match {
		return fmt.Errorf("verify edge: the saved CA certificate has pin %s, not the expected %s: "+
			"the connector's data directory is mixed up; enroll again with a new keyfile", PinOf(caCert), pin)
	}
	return nil
}

// notRoute refuses an edge's leaf that is a cluster member's route
// certificate: it serves TLS server authentication and chains to the CA,
// but a witness holds one too, and a witness must not pass for an edge
// with connectors (it gets no CA key for that very reason).
func notRoute(leaf *x509.Certificate) error {
	if name := routeName(leaf); name != "" {
		return fmt.Errorf("verify edge: the peer presented the cluster route certificate of member %q, not an edge's tunnel certificate: it is no edge (a witness, or a route port dialled by mistake?)", name)
	}
	return nil
}

// verifyLeaf verifies certs[0] against the single root caCert, with the rest
// of certs as intermediates, for server authentication and with no host
// name.
func verifyLeaf(certs []*x509.Certificate, caCert *x509.Certificate) error {
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

// EnrollTLSConfig returns the TLS 1.3 configuration a connector enrolls
// with, before it has the edge's CA certificate: it accepts the edge only if
// MatchPinnedCA accepts the chain the edge presents. After the handshake,
// MatchPinnedCA(conn.ConnectionState().PeerCertificates, pin) returns the CA
// certificate to save. A wrong CA fails the handshake with a
// *PinMismatchError.
func EnrollTLSConfig(pin string, nextProtos []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: slices.Clone(nextProtos),
		// Verification is not skipped: VerifyConnection does it against the
		// pinned CA found in the chain (see ClientTLSConfig for why no host
		// name is checked).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := MatchPinnedCA(cs.PeerCertificates, pin)
			return err
		},
	}
}

// MatchPinnedCA finds, among the certificates after the leaf in certs (a
// chain as a TLS server presents it), a CA certificate whose pin is pin, and
// verifies the leaf against it for server authentication. It returns that
// CA certificate, or a *PinMismatchError when no certificate has the pin.
func MatchPinnedCA(certs []*x509.Certificate, pin string) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, errors.New("verify edge: the edge presented no certificate")
	}
	if _, err := ParsePin(pin); err != nil {
		return nil, fmt.Errorf("verify edge: %w", err)
	}
	for _, c := range certs[1:] {
		if !c.IsCA || !c.BasicConstraintsValid {
			continue
		}
		if match, _ := pinMatches(c, pin); !match {
			continue
		}
		if err := verifyLeaf(certs, c); err != nil {
			return nil, fmt.Errorf("verify edge certificate against the pinned CA: %w", err)
		}
		if err := notRoute(certs[0]); err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, &PinMismatchError{Want: pin, Got: PinOf(certs[len(certs)-1])}
}
