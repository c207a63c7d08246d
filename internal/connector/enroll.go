package connector

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// edgesFile keeps the edge addresses learnt at enrollment.
const edgesFile = "edges.json"

// enroll redeems the keyfile's token with one of its edges: it makes a key
// pair, sends a CSR with the token over TLS pinned to the keyfile's CA pin,
// and saves the certificate it gets. Network failures are retried with
// backoff until ctx ends, and so are refusals that decide nothing (an edge
// that cannot reach its store); any other refusal or a pin mismatch is
// returned at once.
func (c *Connector) enroll(ctx context.Context, kf enroll.Keyfile) (identity, error) {
	// The key outlives this process until the identity is saved: if the
	// edge consumed the token and its answer was lost, the connector asks
	// again with it (and only with it can).
	key, err := pki.EnrollKey(c.cfg.DataDir)
	if err != nil {
		return identity{}, err
	}
	csr, err := pki.NewCSR(key, kf.Name)
	if err != nil {
		return identity{}, err
	}
	edges := kf.Edges
	if len(c.cfg.Edges) > 0 {
		edges = c.cfg.Edges
	}
	req := wire.EnrollRequest{Token: kf.Token, CSR: csr}
	for attempt := 0; ; attempt++ {
		var lastErr error
		for _, addr := range edges {
			resp, ca, err := c.redeem(ctx, addr, kf.CAPin, req)
			c.metrics.Enrolled(attemptResult(err))
			if err == nil {
				return c.saveIdentity(resp, ca, key, kf, addr)
			}
			var ref *wire.Refusal
			var pin *pki.PinMismatchError
			if (errors.As(err, &ref) && !ref.Temporary()) || errors.As(err, &pin) {
				return identity{}, fmt.Errorf("enrollment with edge %s: %w", addr, err)
			}
			c.log.Warn("enrollment attempt failed", "edge", addr, "err", err)
			lastErr = err
		}
		if ctx.Err() != nil {
			return identity{}, fmt.Errorf("enrollment not done: %w", lastErr)
		}
		wait := Backoff(attempt, c.cfg.Tunnel.BackoffMin, c.cfg.Tunnel.BackoffMax, rand.Float64())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return identity{}, fmt.Errorf("enrollment not done: %w", lastErr)
		}
	}
}

// redeem runs one enrollment exchange with the edge at addr.
func (c *Connector) redeem(ctx context.Context, addr, pin string, req wire.EnrollRequest) (wire.EnrollResponse, *x509.Certificate, error) {
	var resp wire.EnrollResponse
	timeout := c.cfg.Tunnel.DialTimeout
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc, err := c.dialTLS(dctx, addr, pki.EnrollTLSConfig(pin, nil))
	if err != nil {
		return resp, nil, err
	}
	defer tc.Close()
	ca, err := pki.MatchPinnedCA(tc.ConnectionState().PeerCertificates, pin)
	if err != nil {
		return resp, nil, err
	}
	err = tunnel.Handshake(dctx, tc, timeout, func() error {
		if err := wire.WriteMessage(tc, wire.KindEnrollRequest, req); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindEnrollResponse, &resp)
	})
	return resp, ca, err
}

// saveIdentity checks the edge's answer and keeps it in the data
// directory, with the edge address the connector enrolled through: it is
// known to reach the edge, where the addresses the edge advertises may not
// resolve from this side (a short host name).
func (c *Connector) saveIdentity(resp wire.EnrollResponse, ca *x509.Certificate, key *ecdsa.PrivateKey, kf enroll.Keyfile, through string) (identity, error) {
	edges := []string{through}
	if err := pki.SaveIdentity(c.cfg.DataDir, resp.Certificate, key, ca); err != nil {
		return identity{}, err
	}
	if err := saveEdges(c.cfg.DataDir, edges); err != nil {
		return identity{}, err
	}
	cert, ca2, err := pki.LoadIdentity(c.cfg.DataDir)
	if err != nil {
		return identity{}, fmt.Errorf("the edge's certificate does not load: %w", err)
	}
	if err := pki.DropEnrollKey(c.cfg.DataDir); err != nil {
		c.log.Warn("could not remove the enrollment key, which connector.key now holds; remove it by hand", "err", err)
	}
	c.log.Info("connector enrolled", "connector", resp.ConnectorID, "name", kf.Name, "data", c.cfg.DataDir)
	if len(c.cfg.Edges) > 0 {
		edges = c.cfg.Edges // the operator's choice wins over what the edge says
	}
	return identity{cert: cert, ca: ca2, pin: kf.CAPin, edges: edges}, nil
}

func saveEdges(dir string, edges []string) error {
	b, _ := json.Marshal(edges)
	if err := atomicfile.Write(filepath.Join(dir, edgesFile), b, 0o600); err != nil {
		return fmt.Errorf("save edge addresses: %w", err)
	}
	return nil
}

func loadEdges(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, edgesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read edge addresses: %w", err)
	}
	var edges []string
	if err := json.Unmarshal(b, &edges); err != nil {
		return nil, fmt.Errorf("read edge addresses from %s: %w", filepath.Join(dir, edgesFile), err)
	}
	return edges, nil
}
