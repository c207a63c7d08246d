package connector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// ErrExpired is wrapped by the error Run returns when the connector's
// certificate has expired: it cannot renew it, and must enroll again.
var ErrExpired = errors.New("connector certificate expired")

// currentCert returns the certificate new connections are made with.
func (c *Connector) currentCert() tls.Certificate {
	c.ident.Lock()
	defer c.ident.Unlock()
	return c.ident.cert
}

func (c *Connector) setCert(cert tls.Certificate) {
	c.ident.Lock()
	c.ident.cert = cert
	c.ident.Unlock()
}

// ExpiredError says that cert has expired, and what to do.
func ExpiredError(cert *tls.Certificate) error {
	leaf := cert.Leaf
	name := leaf.Subject.CommonName
	return fmt.Errorf("%w: the certificate of connector %s (id %s) expired at %s, while the connector was offline or could not reach the edge to renew it; "+
		"it must enroll again: ask the edge's operator for a new keyfile ('sallyport token create --name %s --replace --service ...') and start the connector with --keyfile set to it",
		ErrExpired, name, pki.ConnectorID(leaf), leaf.NotAfter.UTC().Format(time.RFC3339), name)
}

// expired reports whether cert has expired by the connector's clock.
func (c *Connector) expired(cert *tls.Certificate) bool {
	return !c.now().Before(cert.Leaf.NotAfter)
}

// edgeSaysExpired reports whether err is the edge's TLS refusal of an
// expired client certificate (the edge's clock may be ahead of ours).
func edgeSaysExpired(err error) bool {
	return err != nil && strings.Contains(err.Error(), "tls: expired certificate")
}

// keepRenewing renews the connector's certificate each time two thirds
// of its lifetime have passed, with a fresh key each time, until ctx
// ends. A failed renewal is retried with backoff; a revoked identity or
// an expired certificate stops the connector (see Run). Run owns it.
func (c *Connector) keepRenewing(ctx context.Context, id identity) {
	failures := 0
	for {
		cert := c.currentCert()
		wait := pki.RenewAt(cert.Leaf).Sub(c.now())
		if failures > 0 {
			wait = Backoff(failures-1, c.cfg.Tunnel.BackoffMin, c.cfg.Tunnel.BackoffMax, rand.Float64())
		}
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if c.expired(&cert) {
			err := ExpiredError(&cert)
			c.log.Error("the connector's certificate expired before it could be renewed; stopping", "err", err)
			c.stop(err)
			return
		}
		renewed, err := c.renew(ctx, id, cert)
		c.metrics.Renewed(attemptResult(err))
		var ref *wire.Refusal
		switch {
		case err == nil:
			failures = 0
			c.setCert(renewed)
			c.log.Info("connector certificate renewed", "connector", pki.ConnectorID(renewed.Leaf),
				"not_after", renewed.Leaf.NotAfter, "renew_at", pki.RenewAt(renewed.Leaf))
		case ctx.Err() != nil:
			return
		case errors.As(err, &ref) && ref.Code == wire.CodeRevoked:
			c.log.Error("the edge refuses to renew this connector's certificate: it was revoked; stopping", "reason", ref.Reason)
			c.stop(fmt.Errorf("revoked: %s", ref.Reason))
			return
		case edgeSaysExpired(err):
			err := ExpiredError(&cert)
			c.log.Error("the edge says the connector's certificate expired; stopping", "err", err)
			c.stop(err)
			return
		default:
			failures++
			c.log.Warn("certificate renewal failed; will try again", "err", err, "attempt", failures,
				"expires", cert.Leaf.NotAfter)
		}
	}
}

// attemptResult names an enrollment's or renewal's result for the
// metrics: "" for success, the edge's refusal code, or "error" for an
// edge out of reach.
func attemptResult(err error) string {
	var ref *wire.Refusal
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ref):
		return ref.Code.String()
	}
	return "error"
}

// renew asks the edges in turn for a certificate renewing cert, for a
// new key, and saves the result in the data directory. A refusal is
// returned at once; a network failure tries the next edge.
func (c *Connector) renew(ctx context.Context, id identity, cert tls.Certificate) (tls.Certificate, error) {
	name := cert.Leaf.Subject.CommonName
	key, csr, err := pki.NewKeyAndCSR(name)
	if err != nil {
		return tls.Certificate{}, err
	}
	tlsConf := pki.ClientTLSConfig(id.ca, id.pin, &cert, nil)
	var errs []error
	for _, addr := range id.edges {
		resp, err := c.askRenewal(ctx, addr, tlsConf, wire.RenewRequest{CSR: csr})
		var ref *wire.Refusal
		if errors.As(err, &ref) || edgeSaysExpired(err) {
			return tls.Certificate{}, fmt.Errorf("renewal at edge %s: %w", addr, err)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := pki.SaveIdentity(c.cfg.DataDir, resp.Certificate, key, id.ca); err != nil {
			return tls.Certificate{}, err
		}
		renewed, _, err := pki.LoadIdentity(c.cfg.DataDir)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("the renewed certificate does not load: %w", err)
		}
		if got, want := pki.ConnectorID(renewed.Leaf), pki.ConnectorID(cert.Leaf); got != want {
			// Not reached with an edge of this release; saved already, so
			// say it loudly.
			return tls.Certificate{}, fmt.Errorf("the edge %s renewed the certificate for identity %s, not %s", addr, got, want)
		}
		return renewed, nil
	}
	return tls.Certificate{}, errors.Join(errs...)
}

// askRenewal runs one renewal exchange with the edge at addr.
func (c *Connector) askRenewal(ctx context.Context, addr string, tlsConf *tls.Config, req wire.RenewRequest) (wire.RenewResponse, error) {
	var resp wire.RenewResponse
	timeout := c.cfg.Tunnel.DialTimeout
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc, err := c.dialTLS(dctx, addr, tlsConf)
	if err != nil {
		return resp, err
	}
	defer tc.Close()
	err = tunnel.Handshake(dctx, tc, timeout, func() error {
		if err := wire.WriteMessage(tc, wire.KindRenewRequest, req); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindRenewResponse, &resp)
	})
	return resp, err
}
