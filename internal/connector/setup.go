package connector

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
)

// Setup is what a connector starts from, as its config, keyfile and data
// directory say, before it dials anything: Run's first step, and what
// `sallyport doctor` checks.
type Setup struct {
	// Keyfile is the config's keyfile, read; nil when none is set.
	Keyfile *enroll.Keyfile
	// Cert is the connector's certificate (with its Leaf) and CA the
	// edges' CA certificate, from the data directory; both nil when the
	// connector has not enrolled yet.
	Cert *tls.Certificate
	CA   *x509.Certificate
	// Pin is the CA pin the edges must present: the saved CA's once
	// enrolled, else the keyfile's.
	Pin string
	// Edges are the addresses the connector dials: the config's edges if
	// set, else those saved at enrollment (and learnt from the cluster
	// since), else the keyfile's.
	Edges []string
}

// Enrolled reports whether the data directory holds an identity.
func (s Setup) Enrolled() bool { return s.Cert != nil }

// ReadSetup reads the keyfile (if cfg names one) and the identity in
// cfg's data directory (if any), and checks that they belong to the same
// edges. It writes nothing and dials nothing. A data directory without
// an identity is no error: Setup.Enrolled says so, and without a keyfile
// the connector cannot start (see Run).
func ReadSetup(cfg config.Connector) (Setup, error) {
	var s Setup
	if cfg.Keyfile != "" {
		k, err := enroll.ReadKeyfile(cfg.Keyfile)
		if err != nil {
			return s, err
		}
		s.Keyfile = &k
	}
	cert, ca, err := pki.LoadIdentity(cfg.DataDir)
	switch {
	case errors.Is(err, pki.ErrNoIdentity):
		if s.Keyfile != nil {
			s.Pin, s.Edges = s.Keyfile.CAPin, s.Keyfile.Edges
		}
		if len(cfg.Edges) > 0 {
			s.Edges = cfg.Edges
		}
		return s, nil
	case err != nil:
		return s, err
	}
	s.Cert, s.CA, s.Pin = &cert, ca, pki.PinOf(ca)
	if s.Keyfile != nil && s.Keyfile.CAPin != s.Pin {
		return s, fmt.Errorf("the keyfile %s is for another edge (pin %s) than the one this data directory is enrolled with (pin %s): use another --data directory to enroll again", cfg.Keyfile, s.Keyfile.CAPin, s.Pin)
	}
	s.Edges = cfg.Edges
	if len(s.Edges) == 0 {
		if s.Edges, err = loadEdges(cfg.DataDir); err != nil {
			return s, err
		}
	}
	if len(s.Edges) == 0 && s.Keyfile != nil {
		s.Edges = s.Keyfile.Edges
	}
	return s, nil
}

// AnnouncedEdges returns the addresses of the edges the cluster last
// announced (saved in the data directory) that the connector, starting
// from s, dials besides s.Edges: one address for each edge that none of
// s.Edges answered as, within tunnel.max_edges. They are dialled at start
// as s.Edges are (see startFleet and follow).
func AnnouncedEdges(cfg config.Connector, s Setup) ([]string, error) {
	set, reached, err := loadCluster(cfg.DataDir)
	if err != nil || len(set) == 0 {
		return nil, err
	}
	own, ownIDs := map[string]bool{}, map[string]bool{}
	for _, a := range s.Edges {
		own[a] = true
		if id := reached[a]; id != "" {
			ownIDs[id] = true
		}
	}
	first := map[string]string{}
	var ids []string
	for _, e := range set {
		if _, ok := first[e.ID]; !ok {
			first[e.ID] = e.Address
			ids = append(ids, e.ID)
		}
	}
	me := ""
	if s.Cert != nil {
		me = pki.ConnectorID(s.Cert.Leaf)
	}
	kept := rendezvous(me, ids, cfg.Tunnel.MaxEdges)
	var out []string
	for _, id := range ids {
		if kept != nil && !kept[id] || ownIDs[id] || own[first[id]] {
			continue
		}
		out = append(out, first[id])
	}
	return out, nil
}
