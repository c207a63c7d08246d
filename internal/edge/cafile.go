package edge

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// caFile is a client CA file (client_ca), read again when it changes: on
// use, at most once every certCheckEvery, as for certificates. A file
// that no longer loads leaves the previous CAs in force, reported once.
// Its methods are safe for concurrent use.
type caFile struct {
	path string
	log  *slog.Logger
	now  func() time.Time

	// mu guards the fields below.
	mu        sync.Mutex
	pool      *x509.CertPool
	version   fileVersion // of the file pool was read from
	lastCheck time.Time
}

// loadCAFile reads path; a file that cannot be read is an error.
func loadCAFile(path string, log *slog.Logger, now func() time.Time) (*caFile, error) {
	f := &caFile{path: path, log: log, now: now}
	stamp, err := filesStamp(path)
	if err == nil {
		f.pool, err = loadCAPool(path)
	}
	if err != nil {
		return nil, err
	}
	f.version.stamp, f.lastCheck = stamp, now()
	return f, nil
}

// current returns the CAs in force, reading the file again if it changed.
func (f *caFile) current() *x509.CertPool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.now(); now.Sub(f.lastCheck) >= certCheckEvery {
		f.lastCheck = now
		f.reload()
	}
	return f.pool
}

// reload reads the file again if it changed. f.mu is held.
func (f *caFile) reload() {
	reloadChanged(&f.version, []string{f.path}, func() error {
		pool, err := loadCAPool(f.path)
		if err == nil {
			f.pool = pool
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
