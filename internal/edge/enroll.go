package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// MaxTokenTTL bounds an enrollment token's lifetime.
const MaxTokenTTL = 30 * 24 * time.Hour

// CreateKeyfile makes a one-time enrollment token valid for ttl for the
// connector req names, with its grants, stores its hash, and returns the
// keyfile that carries it. A name that is enrolled already (and not
// revoked) is refused unless req.Replace: then redeeming the keyfile
// revokes the connector enrolled under it.
func (e *Edge) CreateKeyfile(ctx context.Context, req admin.TokenRequest, ttl time.Duration) ([]byte, error) {
	name, edges := req.Name, req.Edges
	if !wire.ValidName(name) {
		return nil, &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("bad connector name %q: %s", name, wire.NameRule)}
	}
	if ttl <= 0 || ttl > MaxTokenTTL {
		return nil, &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("ttl %s out of range: use up to %s", ttl, MaxTokenTTL)}
	}
	grants, err := checkGrants(req.Services)
	if err != nil {
		return nil, err
	}
	holder, err := e.enrolledAs(ctx, name)
	if err != nil {
		return nil, err
	}
	if holder.ID != "" && !req.Replace {
		e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "token.create", Subject: "for " + name, Result: "refused: name enrolled as " + holder.ID})
		return nil, &admin.Error{Status: http.StatusConflict, Message: fmt.Sprintf(
			"connector name %s is enrolled already (id %s); a name belongs to one connector: add --replace to enroll a new one in its place (the old one is revoked when the new keyfile is redeemed), or choose another name",
			name, holder.ID)}
	}
	if len(edges) == 0 {
		edges = e.advertise
	}
	tok, err := enroll.NewToken()
	if err != nil {
		return nil, err
	}
	now := e.now().UTC()
	t := store.Token{ID: tok.ID, SecretHash: enroll.HashSecret(tok.Secret), Name: name, CreatedAt: now, ExpiresAt: now.Add(ttl),
		Grants: grants, Replaces: holder.ID}
	kf := enroll.Keyfile{Version: enroll.KeyfileVersion, Name: name, Edges: edges, CAPin: e.ca.Pin(), Token: tok.String(), Expires: t.ExpiresAt}
	b, err := kf.Encode() // validates: nothing is stored for a keyfile that cannot be made
	if err != nil {
		return nil, &admin.Error{Status: http.StatusBadRequest, Message: err.Error()}
	}
	if err := e.st.CreateToken(ctx, t); err != nil {
		return nil, fmt.Errorf("store the new token: %w", err)
	}
	e.log.Info("enrollment token created", "token", tok.ID, "name", name, "grants", grants, "replaces", holder.ID, "expires", t.ExpiresAt)
	detail := fmt.Sprintf("grants %v, expires %s", grants, t.ExpiresAt.Format(time.RFC3339))
	if holder.ID != "" {
		detail += ", replaces " + holder.ID
	}
	e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "token.create", Subject: "token " + tok.ID + " for " + name, Result: "ok", Detail: detail})
	return b, nil
}

// serveEnroll redeems an enrollment request: it checks the token, signs
// the connector's CSR, consumes the token by compare-and-swap, and only
// then sends the certificate. Any refusal changes nothing. It closes tc.
func (e *Edge) serveEnroll(ctx context.Context, tc *tls.Conn, body []byte, log *slog.Logger) {
	defer tc.Close()
	resp, ref, subject := e.enroll(ctx, body)
	actor := "connector at " + tc.RemoteAddr().String()
	if ref != nil {
		log.Warn("enrollment refused", "code", ref.Code.String(), "reason", ref.Reason)
		e.metrics.Enrolled(ref.Code.String())
		if ref.Code != wire.CodeTokenUnknown && ref.Code != wire.CodeTokenMalformed && ref.Code != wire.CodeBadRequest {
			// A real token misused; forgeries are only logged.
			e.auditRefusal(store.AuditEvent{Actor: actor, Action: "enroll", Subject: subject, Result: "refused: " + ref.Reason})
		}
		tunnel.Refuse(tc, ref)
		return
	}
	e.audit(store.AuditEvent{Actor: actor, Action: "enroll", Subject: subject, Result: "ok"})
	e.metrics.Enrolled("")
	tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteMessage(tc, wire.KindEnrollResponse, resp); err != nil {
		log.Warn("enrollment response not delivered", "connector", resp.ConnectorID, "err", err)
		return
	}
	log.Info("connector enrolled", "connector", resp.ConnectorID)
}

// enroll redeems an enrollment request; subject names the token and the
// connector, for the audit trail.
func (e *Edge) enroll(ctx context.Context, body []byte) (_ wire.EnrollResponse, _ *wire.Refusal, subject string) {
	var req wire.EnrollRequest
	if err := wire.Decode(wire.KindEnrollRequest, body, &req); err != nil {
		return wire.EnrollResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: err.Error()}, subject
	}
	id, secret, err := enroll.ParseToken(req.Token)
	if err != nil {
		return wire.EnrollResponse{}, &wire.Refusal{Code: wire.CodeTokenMalformed, Reason: err.Error() + "; the keyfile is damaged: ask the edge's operator for a new one"}, subject
	}
	subject = "token " + id
	now := e.now().UTC()
	check := func(t store.Token) error {
		if r := checkToken(t, secret, now, store.TokenEnroll); r != nil {
			return r
		}
		return nil
	}
	t, err := e.st.GetToken(ctx, id)
	if err != nil {
		return wire.EnrollResponse{}, tokenStoreRefusal(id, err), subject
	}
	if err := check(t); err != nil {
		ref := err.(*wire.Refusal)
		if ref.Code != wire.CodeTokenUsed { // CodeTokenUsed: the secret matched
			return wire.EnrollResponse{}, ref, subject
		}
		if resp, ok := e.enrollAgain(ctx, t, req.CSR, now); ok {
			return resp, nil, fmt.Sprintf("%s %s (token %s, again: its first answer was lost)", t.Name, resp.ConnectorID, id)
		}
		return wire.EnrollResponse{}, ref, subject
	}
	if holder, err := e.enrolledAs(ctx, t.Name); err != nil {
		return wire.EnrollResponse{}, &wire.Refusal{Code: wire.CodeUnavailable, Reason: "the edge cannot read its store now; try again later"}, subject
	} else if holder.ID != "" && holder.ID != t.Replaces {
		return wire.EnrollResponse{}, &wire.Refusal{Code: wire.CodeNameTaken, Reason: fmt.Sprintf(
			"connector name %s is enrolled already (id %s), so this keyfile can no longer be redeemed; ask the edge's operator for a new keyfile made with --replace", t.Name, holder.ID)}, subject
	}
	keyPin, err := pki.KeyPinOfCSR(req.CSR)
	if err != nil {
		return wire.EnrollResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: "certificate request refused: " + err.Error()}, subject
	}
	certDER, connID, err := e.ca.SignConnector(req.CSR, t.Name, now, e.cfg.ConnectorCertificateTTL)
	if err != nil {
		return wire.EnrollResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: "certificate request refused: " + err.Error()}, subject
	}
	subject = fmt.Sprintf("%s %s (token %s, grants %v)", t.Name, connID, id, t.Grants)
	if _, err := e.st.ConsumeToken(ctx, id, check, connID, now); err != nil {
		var ref *wire.Refusal
		if errors.As(err, &ref) {
			return wire.EnrollResponse{}, ref, subject
		}
		return wire.EnrollResponse{}, tokenStoreRefusal(id, err), subject
	}
	rec := store.Connector{ID: connID, Name: t.Name, TokenID: id, EnrolledAt: now, NotAfter: notAfter(certDER), Grants: t.Grants, EnrollKey: keyPin}
	if err := e.st.PutConnector(ctx, rec); err != nil {
		e.log.Error("enrollment: token consumed but connector not recorded", "token", id, "connector", connID, "err", err)
		return wire.EnrollResponse{}, &wire.Refusal{Code: wire.CodeInternal, Reason: "the edge could not record the connector; ask for a new keyfile"}, subject
	}
	if t.Replaces != "" {
		if _, err := e.revoke(ctx, t.Replaces, now); err != nil {
			e.log.Error("enrollment: the replaced connector could not be revoked; revoke it by hand", "connector", t.Replaces, "err", err)
		} else {
			e.log.Warn("connector replaced: the old identity is revoked", "name", t.Name, "old", t.Replaces, "new", connID)
			e.audit(store.AuditEvent{Actor: "edge", Action: "revoke", Subject: t.Name + " " + t.Replaces, Result: "ok",
				Detail: "replaced by " + connID + " (token " + id + ")"})
		}
	}
	return wire.EnrollResponse{Certificate: certDER, CA: e.ca.Certificate().Raw, ConnectorID: connID, Edges: e.advertise}, nil, subject
}

// checkToken is the redemption policy for a token of one of kinds; it is
// run again inside the compare-and-swap, so a token used meanwhile is seen
// as used. The kind is checked after the secret: whoever lacks the secret
// learns nothing of the token.
func checkToken(t store.Token, secret string, now time.Time, kinds ...string) *wire.Refusal {
	switch {
	case !enroll.SecretMatches(t.SecretHash, secret):
		return &wire.Refusal{Code: wire.CodeTokenMismatch, Reason: fmt.Sprintf("token %s does not match what this edge issued: the keyfile was altered; ask the edge's operator for a new one", t.ID)}
	case !slices.Contains(kinds, t.Kind):
		return &wire.Refusal{Code: wire.CodeTokenKind, Reason: fmt.Sprintf("token %s is %s, not %s: it cannot be used here", t.ID, tokenKindName(t.Kind), tokenKindName(kinds[0]))}
	case t.Used():
		return &wire.Refusal{Code: wire.CodeTokenUsed, Reason: fmt.Sprintf("token %s was already used at %s (by %s); a token is redeemed once: ask for a new keyfile", t.ID, t.UsedAt.Format(time.RFC3339), usedBy(t))}
	case t.Revoked():
		return &wire.Refusal{Code: wire.CodeRevoked, Reason: fmt.Sprintf("token %s was revoked at %s by the edge's operator; ask for a new keyfile", t.ID, t.RevokedAt.Format(time.RFC3339))}
	case !now.Before(t.ExpiresAt):
		return &wire.Refusal{Code: wire.CodeTokenExpired, Reason: fmt.Sprintf("token %s expired at %s; ask the edge's operator for a new keyfile", t.ID, t.ExpiresAt.Format(time.RFC3339))}
	}
	return nil
}

// tokenKindName names a token kind for a message.
func tokenKindName(kind string) string {
	switch kind {
	case store.TokenEnroll:
		return "a connector's enrollment token (sallyport connector --keyfile)"
	case store.TokenJoinEdge, store.TokenJoinWitness:
		return "a join token (sallyport edge --join)"
	}
	return fmt.Sprintf("a token of kind %q", kind)
}

// usedBy names who redeemed t: a connector, or a joiner.
func usedBy(t store.Token) string {
	if t.Kind == store.TokenEnroll {
		return "connector " + t.UsedBy
	}
	return t.UsedBy
}

func tokenStoreRefusal(id string, err error) *wire.Refusal {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidID) {
		return &wire.Refusal{Code: wire.CodeTokenUnknown, Reason: fmt.Sprintf("this edge never issued token %s (forged, or made by another edge); check the keyfile's edge address or ask for a new keyfile", id)}
	}
	return &wire.Refusal{Code: wire.CodeUnavailable, Reason: "the edge cannot reach its token store now; try again later"}
}
