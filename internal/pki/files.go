package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"

	// keyMode is the mode of every private key file this package writes.
	keyMode fs.FileMode = 0o600
	// certMode is the mode of certificate files: they hold no secret.
	certMode fs.FileMode = 0o644
	// dirMode is the mode of a directory this package creates.
	dirMode fs.FileMode = 0o700
)

// encodeCert returns der as one PEM CERTIFICATE block.
func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// encodeKey returns key as one PEM PKCS #8 PRIVATE KEY block.
func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pemKey(der), nil
}

// pemKey wraps a PKCS #8 DER private key in one PEM PRIVATE KEY block.
func pemKey(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})
}

// readCertFile reads the single PEM certificate in path. Every error names
// the file.
func readCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != pemCertificate {
		return nil, fmt.Errorf("read %s: no PEM CERTIFICATE block: the file is damaged; restore it from a backup", path)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("read %s: unexpected data after the certificate: the file is damaged; restore it from a backup", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: the file is damaged; restore it from a backup", path, err)
	}
	return cert, nil
}

// readKeyFile reads the single PEM ECDSA private key in path. Every error
// names the file.
func readKeyFile(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != pemPrivateKey {
		return nil, fmt.Errorf("read %s: no PEM PRIVATE KEY block: the file is damaged; restore it from a backup", path)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("read %s: unexpected data after the key: the file is damaged; restore it from a backup", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: the file is damaged; restore it from a backup", path, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("read %s: the key is a %T, want an ECDSA key", path, parsed)
	}
	return key, nil
}

// keyMatchesCert reports whether key is the private half of cert's key.
func keyMatchesCert(key *ecdsa.PrivateKey, cert *x509.Certificate) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && key.PublicKey.Equal(pub)
}

// fileExists reports whether path exists; an error other than "does not
// exist" (a permission problem, say) is returned as is.
func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}
