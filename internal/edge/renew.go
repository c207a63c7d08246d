package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// serveRenew answers a connector's renewal request: on a connection made
// with its current, valid certificate (the TLS handshake has refused an
// expired one), it issues a certificate for the same identity and the new
// key in the request, records the new expiry, and sends it. A revoked or
// unknown identity is refused. The connector's live tunnels are not
// touched: they keep the certificate they were made with. It closes tc.
func (e *Edge) serveRenew(ctx context.Context, tc *tls.Conn, body []byte, log *slog.Logger) {
	defer tc.Close()
	resp, ref, id, name := e.renew(ctx, tc.ConnectionState(), body)
	actor := "connector " + id
	if id == "" {
		actor = "connector at " + tc.RemoteAddr().String()
	}
	subject := strings.TrimSpace(name + " " + id)
	if ref != nil {
		log.Warn("certificate renewal refused", "connector", id, "name", name, "code", ref.Code.String(), "reason", ref.Reason)
		e.metrics.Renewed(ref.Code.String())
		if id != "" {
			e.auditRefusal(store.AuditEvent{Actor: actor, Action: "renew", Subject: subject, Result: "refused: " + ref.Reason})
		}
		tunnel.Refuse(tc, ref)
		return
	}
	tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteMessage(tc, wire.KindRenewResponse, resp); err != nil {
		// The connector keeps its old certificate and asks again.
		log.Warn("renewed certificate not delivered", "connector", id, "err", err)
		e.metrics.Renewed("not delivered")
		e.audit(store.AuditEvent{Actor: actor, Action: "renew", Subject: subject, Result: "refused: not delivered: " + err.Error()})
		return
	}
	until := notAfter(resp.Certificate)
	e.metrics.Renewed("")
	log.Info("connector certificate renewed", "connector", id, "name", name, "not_after", until)
	e.audit(store.AuditEvent{Actor: actor, Action: "renew", Subject: subject, Result: "ok",
		Detail: "valid until " + until.UTC().Format(time.RFC3339)})
}

// renew decides a renewal request made over a connection in state cs; id
// and name say whose, once known.
func (e *Edge) renew(ctx context.Context, cs tls.ConnectionState, body []byte) (_ wire.RenewResponse, _ *wire.Refusal, id, name string) {
	cert, err := pki.PeerConnector(cs)
	if err != nil {
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeNotEnrolled, Reason: "no client certificate: only an enrolled connector renews its certificate"}, "", ""
	}
	id, name = pki.ConnectorID(cert), cert.Subject.CommonName
	var req wire.RenewRequest
	if err := wire.Decode(wire.KindRenewRequest, body, &req); err != nil {
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: err.Error()}, id, name
	}
	// The store, not the watch: a revocation a moment ago at another edge
	// must hold here.
	rec, err := e.st.GetConnector(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeNotEnrolled, Reason: "this edge has no record of connector " + id + ": enroll it again with a new keyfile"}, id, name
	case err != nil:
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeUnavailable, Reason: "the edge cannot read its store now; try again later"}, id, name
	case rec.Revoked():
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeRevoked, Reason: revokedReason(rec)}, id, rec.Name
	}
	now := e.now().UTC()
	if !e.renewals.allow(id, now) {
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeUnavailable, Reason: fmt.Sprintf(
			"connector %s renewed its certificate %d times lately; a connector renews once per two thirds of its certificate's lifetime: try again later", id, renewalBurst)}, id, rec.Name
	}
	der, err := e.ca.RenewConnector(req.CSR, rec.Name, id, now, e.cfg.ConnectorCertificateTTL)
	if err != nil {
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: "certificate request refused: " + err.Error()}, id, rec.Name
	}
	// Compare-and-swap: a revocation that lands meanwhile wins, and no
	// certificate leaves the edge.
	_, err = e.st.UpdateConnector(ctx, id, func(c *store.Connector) error {
		if c.Revoked() {
			return &wire.Refusal{Code: wire.CodeRevoked, Reason: revokedReason(*c)}
		}
		c.NotAfter = notAfter(der)
		return nil
	})
	if err != nil {
		var ref *wire.Refusal
		if errors.As(err, &ref) {
			return wire.RenewResponse{}, ref, id, rec.Name
		}
		e.log.Error("certificate renewal: the new expiry could not be recorded", "connector", id, "err", err)
		return wire.RenewResponse{}, &wire.Refusal{Code: wire.CodeUnavailable, Reason: "the edge could not record the renewal; try again later"}, id, rec.Name
	}
	return wire.RenewResponse{Certificate: der}, nil, id, rec.Name
}

// notAfter returns the expiry of a certificate this edge has just made.
func notAfter(der []byte) time.Time {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return time.Time{} // not reached: the CA made it
	}
	return cert.NotAfter
}

// expiredClientCert reports whether a failed tunnel-port handshake failed
// on a client certificate that has expired, for a plainer log line.
func expiredClientCert(err error) bool {
	var inv x509.CertificateInvalidError
	return errors.As(err, &inv) && inv.Reason == x509.Expired
}

// expiredMessage is what the edge logs for a connector whose certificate
// expired.
func expiredMessage(err error) string {
	return fmt.Sprintf("connector refused: its certificate has expired (%v); it must enroll again with a new keyfile ('sallyport token create --name NAME --replace')", err)
}

// serverCertRenewed logs a reissue of the edge's own server certificate
// while it runs, or a failed attempt.
func (e *Edge) serverCertRenewed(leaf *x509.Certificate, err error) {
	if err != nil {
		e.log.Error("the edge's server certificate expires soon and could not be reissued; will try again at the next connection", "err", err)
		return
	}
	e.log.Info("edge server certificate renewed", "serial", fmt.Sprintf("%x", leaf.SerialNumber), "not_after", leaf.NotAfter)
}
