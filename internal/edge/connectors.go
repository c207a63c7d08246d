package edge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/wire"
)

// maxGrants bounds the services one connector may be granted.
const maxGrants = maxOffered

// checkGrants returns services sorted without repeats, or an error naming
// a bad one.
func checkGrants(services []string) ([]string, error) {
	out := slices.Clone(services)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > maxGrants {
		return nil, &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("%d services granted; at most %d", len(out), maxGrants)}
	}
	for _, s := range out {
		if !wire.ValidName(s) {
			return nil, &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("bad service name %q: %s", s, wire.NameRule)}
		}
	}
	return out, nil
}

// enrolledAs returns the connector enrolled under name and not revoked;
// its ID is empty if there is none.
func (e *Edge) enrolledAs(ctx context.Context, name string) (store.Connector, error) {
	e.conns.Lock()
	defer e.conns.Unlock()
	for _, c := range e.conns.ids {
		if c.Name == name && !c.Revoked() {
			return c, nil
		}
	}
	return store.Connector{}, nil
}

// lookup finds the connector that ref names: its id, or the name of a
// connector that is not revoked (else the newest revoked one by that
// name). It looks in what the watch has brought first, then in the
// store: a connector enrolled at another edge a moment ago may not be
// here yet, and an operator's grant or revocation must find it.
func (e *Edge) lookup(ctx context.Context, ref string) (store.Connector, error) {
	e.conns.Lock()
	c, ok := pickConnector(maps.Values(e.conns.ids), ref)
	e.conns.Unlock()
	if ok {
		return c, nil
	}
	all, err := e.st.ListConnectors(ctx)
	if err != nil {
		return store.Connector{}, storeError("find connector "+ref, err)
	}
	if c, ok := pickConnector(slices.Values(all), ref); ok {
		return c, nil
	}
	return store.Connector{}, &admin.Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no connector is enrolled as %q (by name or id); see sallyport connectors list", ref)}
}

// pickConnector is the connector among cs that ref names (see lookup).
func pickConnector(cs iter.Seq[store.Connector], ref string) (store.Connector, bool) {
	var found store.Connector
	for c := range cs {
		if c.ID == ref {
			return c, true
		}
		if c.Name == ref && (found.ID == "" || found.Revoked() && (!c.Revoked() || c.EnrolledAt.After(found.EnrolledAt))) {
			found = c
		}
	}
	return found, found.ID != ""
}

// view is a connector as the admin API shows it.
func (e *Edge) view(c store.Connector) admin.Connector {
	v := admin.Connector{ID: c.ID, Name: c.Name, Grants: c.Grants, EnrolledAt: c.EnrolledAt, NotAfter: c.NotAfter, RevokedAt: c.RevokedAt}
	if v.Grants == nil {
		v.Grants = []string{}
	}
	e.conns.Lock()
	defer e.conns.Unlock()
	v.Tunnels = len(e.conns.byID[c.ID])
	if v.Tunnels > 0 {
		v.LastSeen = e.now().UTC()
	} else {
		v.LastSeen = e.conns.lastSeen[c.ID]
	}
	return v
}

// Connectors lists the enrolled connectors by name, for the admin API.
func (e *Edge) Connectors(ctx context.Context) ([]admin.Connector, error) {
	e.conns.Lock()
	recs := make([]store.Connector, 0, len(e.conns.ids))
	for _, c := range e.conns.ids {
		recs = append(recs, c)
	}
	e.conns.Unlock()
	out := make([]admin.Connector, 0, len(recs))
	for _, c := range recs {
		out = append(out, e.view(c))
	}
	slices.SortFunc(out, func(a, b admin.Connector) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), a.EnrolledAt.Compare(b.EnrolledAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Grant lets connector ref offer service, or no longer (grant false). It
// applies to live tunnels at once, through the store's watch.
func (e *Edge) Grant(ctx context.Context, ref, service string, grant bool) (admin.Connector, error) {
	if !wire.ValidName(service) {
		return admin.Connector{}, &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("bad service name %q: %s", service, wire.NameRule)}
	}
	c, err := e.lookup(ctx, ref)
	if err != nil {
		return admin.Connector{}, err
	}
	c, err = e.st.UpdateConnector(ctx, c.ID, func(c *store.Connector) error {
		if c.Revoked() {
			return &admin.Error{Status: http.StatusConflict, Message: fmt.Sprintf("connector %s (%s) is revoked; enroll a new one", c.Name, c.ID)}
		}
		i, held := slices.BinarySearch(c.Grants, service)
		switch {
		case grant && !held:
			if len(c.Grants) >= maxGrants {
				return &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("connector %s has %d grants, the most it may have", c.Name, maxGrants)}
			}
			c.Grants = slices.Insert(c.Grants, i, service)
		case !grant && held:
			c.Grants = slices.Delete(c.Grants, i, i+1)
		}
		return nil
	})
	action := "grant"
	if !grant {
		action = "ungrant"
	}
	if err != nil {
		e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: action, Subject: ref + " " + service, Result: "refused: " + err.Error()})
		return admin.Connector{}, storeError("change the grants of connector "+ref, err)
	}
	e.identityChanged(c) // at once here; the watch brings it to other edges
	e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: action, Subject: c.Name + " " + c.ID, Result: "ok",
		Detail: fmt.Sprintf("service %s; grants now %v", service, c.Grants)})
	verb := "granted"
	if !grant {
		verb = "ungranted"
	}
	e.log.Info("connector "+verb+" a service", "connector", c.ID, "name", c.Name, "service", service, "grants", c.Grants)
	return e.view(c), nil
}

// RevokeConnector revokes connector ref: its tunnels close at once and it
// is refused from then on.
func (e *Edge) RevokeConnector(ctx context.Context, ref string) (admin.Connector, error) {
	c, err := e.lookup(ctx, ref)
	if err != nil {
		return admin.Connector{}, err
	}
	c, err = e.revoke(ctx, c.ID, e.now().UTC())
	if err != nil {
		e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "revoke", Subject: ref, Result: "refused: " + err.Error()})
		return admin.Connector{}, storeError("revoke connector "+ref, err)
	}
	e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "revoke", Subject: c.Name + " " + c.ID, Result: "ok"})
	e.log.Warn("connector revoked by the operator", "connector", c.ID, "name", c.Name)
	return e.view(c), nil
}

// revoke marks connector id revoked at now (an earlier revocation stands)
// and closes its tunnels.
func (e *Edge) revoke(ctx context.Context, id string, now time.Time) (store.Connector, error) {
	c, err := e.st.UpdateConnector(ctx, id, func(c *store.Connector) error {
		if !c.Revoked() {
			c.RevokedAt = now
		}
		return nil
	})
	if err != nil {
		return store.Connector{}, err
	}
	e.identityChanged(c)
	return c, nil
}

// Tokens lists the enrollment tokens, newest first, for the admin API.
func (e *Edge) Tokens(ctx context.Context) ([]admin.Token, error) {
	ts, err := e.st.ListTokens(ctx)
	if err != nil {
		return nil, storeError("list tokens", err)
	}
	now := e.now()
	out := make([]admin.Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenView(t, now))
	}
	slices.SortFunc(out, func(a, b admin.Token) int { return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

// RevokeToken makes an unused token useless; a used one cannot be
// revoked (revoke the connector instead).
func (e *Edge) RevokeToken(ctx context.Context, id string) (admin.Token, error) {
	now := e.now().UTC()
	t, err := e.st.UpdateToken(ctx, id, func(t *store.Token) error {
		switch {
		case t.Used() && t.Kind != store.TokenEnroll:
			return &admin.Error{Status: http.StatusConflict, Message: fmt.Sprintf(
				"join token %s was used already, by %s, which holds the cluster's certificates now", t.ID, t.UsedBy)}
		case t.Used():
			return &admin.Error{Status: http.StatusConflict, Message: fmt.Sprintf(
				"token %s was used already, by connector %s: revoke the connector instead (sallyport connectors revoke %s)", t.ID, t.UsedBy, t.UsedBy)}
		case !t.Revoked():
			t.RevokedAt = now
		}
		return nil
	})
	if err != nil {
		e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "token.revoke", Subject: "token " + id, Result: "refused: " + err.Error()})
		return admin.Token{}, storeError("revoke token "+id, err)
	}
	e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "token.revoke", Subject: "token " + t.ID, Result: "ok", Detail: "for " + t.Name})
	e.log.Info("token revoked", "token", t.ID, "name", t.Name, "kind", t.Kind)
	return tokenView(t, now), nil
}

func tokenView(t store.Token, now time.Time) admin.Token {
	v := admin.Token{ID: t.ID, Name: t.Name, Kind: cmp.Or(t.Kind, "enroll"), Grants: t.Grants, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt,
		UsedAt: t.UsedAt, UsedBy: t.UsedBy, RevokedAt: t.RevokedAt}
	switch {
	case t.Used():
		v.State = "used"
	case t.Revoked():
		v.State = "revoked"
	case !now.Before(t.ExpiresAt):
		v.State = "expired"
	default:
		v.State = "unused"
	}
	return v
}

// storeError turns a store failure into an admin error that says what
// failed; an *admin.Error passes unchanged.
func storeError(what string, err error) error {
	var ae *admin.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalidID):
		return &admin.Error{Status: http.StatusNotFound, Message: what + ": " + err.Error()}
	}
	return fmt.Errorf("%s: %w", what, err)
}
