// Package tlsfiles reads TLS material from the operator's files (https
// certificate and key pairs, client CA bundles) and reads each file again
// when it changes, so that a renewed certificate needs no restart.
package tlsfiles

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CheckEvery is how often, at most, a file is checked for changes: on use
// (a handshake, a verification), never by a goroutine of its own.
const CheckEvery = time.Second

// Pair names a certificate file and its key file, both PEM.
type Pair struct{ Cert, Key string }

// Certs holds an https listener's certificates, picks one by the client's
// SNI and reads a pair of files again when either changes. Its methods are
// safe for concurrent use.
type Certs struct {
	log *slog.Logger
	now func() time.Time

	// loaded is the pairs as last read, and when the files were last
	// checked.
	loaded struct {
		sync.Mutex
		pairs     []*certPair
		lastCheck time.Time
	}
}

// certPair is one certificate and key file pair as last loaded.
type certPair struct {
	files   Pair
	version fileVersion // of the files cert was loaded from
	cert    *tls.Certificate
}

// LoadCerts loads every pair; any that cannot be loaded is an error. log
// tells of reloads and of files that stop loading.
func LoadCerts(files []Pair, log *slog.Logger) (*Certs, error) {
	s := &Certs{log: log, now: time.Now}
	for i, f := range files {
		p := &certPair{files: f}
		stamp, err := fileStamp(f)
		if err == nil {
			p.cert, err = loadPair(f)
		}
		if err != nil {
			return nil, fmt.Errorf("certificates[%d]: %w", i, err)
		}
		p.version.stamp = stamp
		s.loaded.pairs = append(s.loaded.pairs, p)
	}
	if len(s.loaded.pairs) == 0 {
		return nil, errors.New("no certificates: an https listener needs at least one {cert, key} pair")
	}
	s.loaded.lastCheck = s.now()
	return s, nil
}

func loadPair(f Pair) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s with key %s: %w", f.Cert, f.Key, err)
	}
	return &c, nil
}

// fileStamp names the current version of a pair's files by their
// modification times and sizes.
func fileStamp(f Pair) (string, error) {
	stamp, err := filesStamp(f.Cert, f.Key)
	if err != nil {
		return "", fmt.Errorf("certificate file: %w", err)
	}
	return stamp, nil
}

// filesStamp names the current version of files by their modification
// times and sizes.
func filesStamp(names ...string) (string, error) {
	stamp := ""
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

// GetCertificate is for tls.Config.GetCertificate: the first certificate
// valid for the client's server name, or the first one when none is (or no
// name came).
func (s *Certs) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.loaded.Lock()
	defer s.loaded.Unlock()
	if now := s.now(); now.Sub(s.loaded.lastCheck) >= CheckEvery {
		s.loaded.lastCheck = now
		s.reload()
	}
	if hello.ServerName != "" {
		for _, p := range s.loaded.pairs {
			if hello.SupportsCertificate(p.cert) == nil {
				return p.cert, nil
			}
		}
	}
	return s.loaded.pairs[0].cert, nil
}

// reload reads again every pair whose files changed; a pair that fails to
// load keeps serving its previous certificate. s.loaded is locked.
func (s *Certs) reload() {
	for _, p := range s.loaded.pairs {
		reloadChanged(&p.version, []string{p.files.Cert, p.files.Key}, func() error {
			cert, err := loadPair(p.files)
			if err == nil {
				p.cert = cert
				s.log.Info("https certificate reloaded", "cert", p.files.Cert, "names", cert.Leaf.DNSNames, "not_after", cert.Leaf.NotAfter)
			}
			return err
		}, func(err error) {
			s.log.Error("https certificate not reloaded; still serving the previous one", "cert", p.files.Cert, "err", err)
		})
	}
}

// fileVersion is the version of a set of files last loaded (stamp), and
// the last version that failed to load with its error (failed), so that a
// broken file is reported once.
type fileVersion struct{ stamp, failed string }

// reloadChanged calls load if the files changed since the version v last
// loaded, and records the new version if it succeeds; a failure is
// reported to failed once per version and error. The caller serializes
// calls for one v.
func reloadChanged(v *fileVersion, names []string, load func() error, failed func(error)) {
	stamp, err := filesStamp(names...)
	if err == nil && stamp == v.stamp {
		return
	}
	if err == nil {
		err = load()
	}
	if err != nil {
		if key := stamp + err.Error(); key != v.failed {
			failed(err)
			v.failed = key
		}
		return
	}
	v.stamp, v.failed = stamp, ""
}
