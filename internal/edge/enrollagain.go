package edge

import (
	"context"
	"crypto/subtle"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/wire"
)

// enrollAgain answers a connector that redeems token t a second time
// because it never got the first answer (the connection broke after the
// edge consumed the token, or the connector was restarted meanwhile): it
// keeps the key it made for the enrollment until it has its certificate,
// and a request for that same key, while the token is still within its
// lifetime and neither it nor the connector is revoked, gets a new
// certificate for the same identity. A keyfile stolen after its use buys
// nothing: the thief does not hold the key. ok is false when t's refusal
// stands.
func (e *Edge) enrollAgain(ctx context.Context, t store.Token, csr []byte, now time.Time) (_ wire.EnrollResponse, ok bool) {
	// The caller's check refused t as used, so its secret matched.
	if t.Kind != store.TokenEnroll || !t.Used() || t.Revoked() || !now.Before(t.ExpiresAt) {
		return wire.EnrollResponse{}, false
	}
	keyPin, err := pki.KeyPinOfCSR(csr)
	if err != nil {
		return wire.EnrollResponse{}, false
	}
	rec, err := e.st.GetConnector(ctx, t.UsedBy)
	if err != nil || rec.Revoked() || rec.TokenID != t.ID || rec.EnrollKey == "" ||
		subtle.ConstantTimeCompare([]byte(rec.EnrollKey), []byte(keyPin)) != 1 {
		return wire.EnrollResponse{}, false
	}
	der, err := e.ca.RenewConnector(csr, rec.Name, rec.ID, now, e.cfg.ConnectorCertificateTTL)
	if err != nil {
		return wire.EnrollResponse{}, false
	}
	// As a renewal: a revocation that lands meanwhile wins.
	if _, err := e.st.UpdateConnector(ctx, rec.ID, func(c *store.Connector) error {
		if c.Revoked() {
			return &wire.Refusal{Code: wire.CodeRevoked, Reason: revokedReason(*c)}
		}
		c.NotAfter = notAfter(der)
		return nil
	}); err != nil {
		return wire.EnrollResponse{}, false
	}
	e.log.Info("enrollment redeemed again with the same key: the connector never got the first answer", "token", t.ID, "connector", rec.ID)
	return wire.EnrollResponse{Certificate: der, CA: e.ca.Certificate().Raw, ConnectorID: rec.ID, Edges: e.advertise}, true
}
