package pki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// File names of a connector's identity inside its data directory.
const (
	ConnectorCertFile = "connector.crt"
	ConnectorKeyFile  = "connector.key"
	// ConnectorCAFile holds the edge CA certificate the connector trusts.
	// It has the same name as the edge's CACertFile, but it lives in the
	// connector's data directory.
	ConnectorCAFile = "ca.crt"
)

// ErrNoIdentity is wrapped by LoadIdentity when the directory holds no
// connector certificate yet: the connector must enroll.
var ErrNoIdentity = errors.New("no connector identity: enroll with a keyfile first")

// connectorNextKeyFile holds a new key while SaveIdentity replaces an
// identity (a renewal with a new key): see SaveIdentity.
const connectorNextKeyFile = ConnectorKeyFile + ".next"

// SaveIdentity writes a connector's identity into dir (created with mode
// 0700 if missing): its certificate certDER as connector.crt, its key as
// connector.key (mode 0600) and the edge CA certificate as ca.crt. It checks
// that the certificate is for key and issued by caCert.
//
// Each file is replaced atomically, but the pair is two files, and a
// connector killed between them (a renewal, every two thirds of a
// certificate's life) must not be left with a key that does not fit its
// certificate. So the key goes first to connector.key.next, then the
// certificate, then the key is moved into place: a directory with an old
// certificate still has its old key, and one with the new certificate has
// its key in connector.key or connector.key.next, which LoadIdentity
// takes. connector.crt is written after the CA and the key, so a
// directory with one is complete.
func SaveIdentity(dir string, certDER []byte, key *ecdsa.PrivateKey, caCert *x509.Certificate) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("save connector identity: the edge sent an unreadable certificate: %w", err)
	}
	if !keyMatchesCert(key, cert) {
		return errors.New("save connector identity: the certificate the edge sent is not for this connector's key")
	}
	if err := cert.CheckSignatureFrom(caCert); err != nil {
		return fmt.Errorf("save connector identity: the certificate the edge sent is not signed by the pinned CA: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, ConnectorCAFile), encodeCert(caCert.Raw), certMode); err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	next := filepath.Join(dir, connectorNextKeyFile)
	if err := atomicfile.Write(next, keyPEM, keyMode); err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, ConnectorCertFile), encodeCert(certDER), certMode); err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	if err := os.Rename(next, filepath.Join(dir, ConnectorKeyFile)); err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	return syncDir(dir)
}

// connectorEnrollKeyFile holds the key a connector enrolls with, from
// before its first request until its identity is saved.
const connectorEnrollKeyFile = "enroll.key"

// EnrollKey returns the key the connector in dir enrolls with: the one
// kept in enroll.key, or a new one written there (mode 0600) first. A
// connector stopped after the edge consumed its token, but before the
// answer arrived, asks again with this same key when it starts again, and
// the edge answers it; with any other key the token stays used.
func EnrollKey(dir string) (*ecdsa.PrivateKey, error) {
	path := filepath.Join(dir, connectorEnrollKeyFile)
	key, err := readKeyFile(path)
	if err == nil {
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if key, err = NewKey(); err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("keep the enrollment key: %w", err)
	}
	if err := atomicfile.Write(path, keyPEM, keyMode); err != nil {
		return nil, fmt.Errorf("keep the enrollment key: %w", err)
	}
	return key, nil
}

// DropEnrollKey removes the key EnrollKey kept in dir, once the identity
// it enrolled is saved (as connector.key).
func DropEnrollKey(dir string) error {
	err := os.Remove(filepath.Join(dir, connectorEnrollKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save connector identity: %w", err)
	}
	return nil
}

// LoadIdentity reads what SaveIdentity wrote in dir: the connector's
// certificate and key as a tls.Certificate (with Leaf set), and the edge CA
// certificate. It returns an error wrapping ErrNoIdentity when dir has no
// connector.crt; any other problem is an error naming the file.
func LoadIdentity(dir string) (tls.Certificate, *x509.Certificate, error) {
	certPath := filepath.Join(dir, ConnectorCertFile)
	keyPath := filepath.Join(dir, ConnectorKeyFile)
	caPath := filepath.Join(dir, ConnectorCAFile)
	have, err := fileExists(certPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load connector identity: %w", err)
	}
	if !have {
		return tls.Certificate{}, nil, fmt.Errorf("load connector identity from %s: %w", dir, ErrNoIdentity)
	}
	cert, err := readCertFile(certPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load connector identity: %w", err)
	}
	key, err := readKeyFile(keyPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load connector identity: %w", err)
	}
	caCert, err := readCertFile(caPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load connector identity: %w", err)
	}
	if !keyMatchesCert(key, cert) {
		// A save stopped after the certificate, before its key was moved
		// into place (see SaveIdentity): finish it.
		nextPath := filepath.Join(dir, connectorNextKeyFile)
		next, nerr := readKeyFile(nextPath)
		if nerr != nil || !keyMatchesCert(next, cert) {
			return tls.Certificate{}, nil, fmt.Errorf("load connector identity: %s does not belong to %s: enroll again", keyPath, certPath)
		}
		if err := os.Rename(nextPath, keyPath); err != nil {
			return tls.Certificate{}, nil, fmt.Errorf("load connector identity: finish replacing %s: %w", keyPath, err)
		}
		key = next
	}
	if err := cert.CheckSignatureFrom(caCert); err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load connector identity: %s is not signed by the CA in %s: enroll again", certPath, caPath)
	}
	return tls.Certificate{
		Certificate: [][]byte{cert.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	}, caCert, nil
}

// RenewAt returns when a connector should renew cert: once two thirds of
// its lifetime have passed. The lifetime counts from the certificate's
// issue, not from its NotBefore, which is backdated by a clock-skew
// allowance that would otherwise make short lifetimes renew at once.
func RenewAt(cert *x509.Certificate) time.Time {
	issued := cert.NotBefore.Add(ClockSkew)
	if !issued.Before(cert.NotAfter) {
		issued = cert.NotBefore // not one of ours: take it as it says
	}
	return issued.Add(cert.NotAfter.Sub(issued) * 2 / 3)
}
