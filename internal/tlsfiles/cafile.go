package tlsfiles

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CAFile is a client CA file (client_ca), read again when it changes: on
// use, at most once every CheckEvery, as for certificates. A file
// that no longer loads leaves the previous CAs in force, reported once.
// Its methods are safe for concurrent use.
type CAFile struct {
	path string
	log  *slog.Logger
	now  func() time.Time

	// loaded is what was read last, and when the file was last checked.
	loaded struct {
		sync.Mutex
		pool      *x509.CertPool
		version   fileVersion // of the file pool was read from
		lastCheck time.Time
	}
}

// LoadCAFile reads path; a file that cannot be read is an error. log tells
// of reloads; now is the clock (time.Now if nil).
func LoadCAFile(path string, log *slog.Logger, now func() time.Time) (*CAFile, error) {
	if now == nil {
		now = time.Now
	}
	f := &CAFile{path: path, log: log, now: now}
	stamp, err := filesStamp(path)
	if err == nil {
		f.loaded.pool, err = loadCAPool(path)
	}
	if err != nil {
		return nil, err
	}
	f.loaded.version.stamp, f.loaded.lastCheck = stamp, now()
	return f, nil
}

// Pool returns the CAs in force, reading the file again if it changed.
func (f *CAFile) Pool() *x509.CertPool {
	f.loaded.Lock()
	defer f.loaded.Unlock()
	if now := f.now(); now.Sub(f.loaded.lastCheck) >= CheckEvery {
		f.loaded.lastCheck = now
		f.reload()
	}
	return f.loaded.pool
}

// reload reads the file again if it changed. f.loaded is locked.
func (f *CAFile) reload() {
	reloadChanged(&f.loaded.version, []string{f.path}, func() error {
		pool, err := loadCAPool(f.path)
		if err == nil {
			f.loaded.pool = pool
			f.log.Info("client CA file reloaded", "client_ca", f.path)
		}
		return err
	}, func(err error) {
		f.log.Error("client CA file not reloaded; the previous CAs stay in force", "client_ca", f.path, "err", err)
	})
}

// loadCAPool reads a PEM file of CA certificates.
func loadCAPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("client CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Verify checks that the chain's leaf was issued for client use by one of
// the CAs in force at now; the error says what to do about it.
func (f *CAFile) Verify(chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("none presented (reach it over https with a client certificate)")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         f.Pool(),
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("certificate %q not accepted: %w", chain[0].Subject.CommonName, err)
	}
	return nil
}
