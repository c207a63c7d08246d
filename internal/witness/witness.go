// Package witness is sallyport's store-only cluster member: an embedded
// NATS server with JetStream and a cluster port, and nothing else — no
// tunnel port, no client listener, no admin API. Two edges cannot make a
// JetStream quorum of three on their own; a witness on a third machine can,
// so that the loss of any one of the three costs nothing.
//
//	w, err := witness.New(witness.Options{DataDir: dir, Listen: ":6222", Routes: []string{"edge1:6222"}}, log)
//	err = w.Run(ctx) // until ctx ends
//
// Its identity is a route certificate of the edge CA, with the CA
// certificate, in DataDir/pki (route.crt, route.key, ca.crt), placed there
// by joining the cluster; its server name is the certificate's name.
package witness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
)

// statusEvery is how often the witness looks at the cluster, to log when
// members come and go.
const statusEvery = 2 * time.Second

// Options configure a witness.
type Options struct {
	// DataDir holds pki/ (route certificate, key, CA certificate), the
	// NATS files (nats/) and cluster.json. Required.
	DataDir string
	// Listen is the cluster port's address, e.g. ":6222". Required.
	Listen string
	// Advertise is the host:port the members dial to reach this one;
	// empty lets NATS derive it from Listen.
	Advertise string
	// Routes are members' cluster addresses; those in DataDir/cluster.json
	// are added. At least one is needed.
	Routes []string
	// Replicas is the store's replica setting (see store.Options).
	Replicas int
}

// Witness is a store-only member. Create it with New and run it once.
type Witness struct {
	opts Options
	log  *slog.Logger
	// ready is closed once the witness has joined the cluster; st is set
	// before that.
	ready chan struct{}
	st    *store.JetStream
}

// LoadOrCreateID returns the witness's id, kept in dataDir/witness.id,
// making the data directory (mode 0700) and a new id when there are none.
// Its server name, and its route certificate's, is sallyport-<id>.
func LoadOrCreateID(dataDir string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("witness: create data directory: %w", err)
	}
	return atomicfile.LoadOrCreate(filepath.Join(dataDir, "witness.id"), "witness id", func() string {
		b := make([]byte, 4)
		rand.Read(b)
		return "witness-" + hex.EncodeToString(b)
	})
}

// New checks opts and returns a witness ready to Run. It does no I/O.
func New(opts Options, log *slog.Logger) (*Witness, error) {
	var errs []error
	if opts.DataDir == "" {
		errs = append(errs, errors.New("witness: the data directory is required (--data)"))
	}
	if _, _, err := net.SplitHostPort(opts.Listen); err != nil {
		errs = append(errs, fmt.Errorf("witness: cluster listen address %q: %w; give HOST:PORT such as :6222 (--cluster-listen)", opts.Listen, err))
	}
	if opts.Advertise != "" {
		if _, _, err := net.SplitHostPort(opts.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("witness: cluster advertise address %q: %w; give HOST:PORT (--cluster-advertise)", opts.Advertise, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Witness{opts: opts, log: log, ready: make(chan struct{})}, nil
}

// Ready is closed once the witness has joined the cluster.
func (w *Witness) Ready() <-chan struct{} { return w.ready }

// StreamReplicas reports how many servers hold a current copy of each of
// the store's streams (store.JetStream.StreamReplicas); valid after Ready,
// until Run returns.
func (w *Witness) StreamReplicas(ctx context.Context) (map[string]int, error) {
	return w.st.StreamReplicas(ctx)
}

// Run joins the cluster and serves as a member until ctx ends, logging
// when the cluster's membership changes; then it stops its server. It
// returns early if the data directory has no route certificate, no route
// is known, or no quorum forms in time.
func (w *Witness) Run(ctx context.Context) error {
	dir := w.opts.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("witness: create data directory: %w", err)
	}
	cert, caCert, err := pki.LoadRoute(filepath.Join(dir, "pki"))
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	routes, err := store.Routes(w.opts.Routes, dir)
	if err != nil {
		return fmt.Errorf("witness: %w", err)
	}
	if len(routes) == 0 {
		return fmt.Errorf("witness: no route to a cluster member: give one with --cluster-route HOST:PORT (an edge's cluster port), or join the cluster")
	}
	name := cert.Leaf.Subject.CommonName
	st, err := store.Open(ctx, store.Options{
		Dir: filepath.Join(dir, "nats"), Name: name, Logger: w.log, Replicas: w.opts.Replicas,
		Cluster: &store.Cluster{Listen: w.opts.Listen, Advertise: w.opts.Advertise, Routes: routes, TLS: pki.RouteTLSConfig(caCert, cert)},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for the cluster
		}
		return fmt.Errorf("witness: %w", err)
	}
	defer st.Close()
	w.st = st
	last := st.ClusterStatus()
	w.log.Info("witness joined the cluster", "name", name, "cluster_listen", w.opts.Listen, "routes", len(routes),
		"servers", last.Servers, "online", last.Online, "leader", last.Leader)
	close(w.ready)
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.log.Info("witness stopping")
			return nil
		case <-t.C:
		}
		if now := st.ClusterStatus(); now != last {
			w.log.Info("cluster changed", "servers", now.Servers, "online", now.Online, "leader", now.Leader)
			last = now
		}
	}
}
