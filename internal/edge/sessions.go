package edge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/ingress"
	"github.com/sallyport/sallyport/internal/sessionpage"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// A one-time session's lifetime: the time within which its link may be
// used, once. The carried connection itself may last longer.
// The default is admin.DefaultSessionTTL.
const (
	MinSessionTTL = time.Second
	MaxSessionTTL = 24 * time.Hour
)

// sessionStoreTimeout bounds the store calls of one session redemption.
const sessionStoreTimeout = 5 * time.Second

// The reasons a session link is refused, as a WebSocket client reads them
// in the close frame. A forged token and a token of another edge's store
// read alike: the edge cannot tell them apart, and says no more.
const (
	SessionUsed    = "session link already used"
	SessionExpired = "session expired"
	SessionRevoked = "session revoked"
	SessionUnknown = "unknown session link"
)

// CreateSession makes a one-time session for req.Service, valid for ttl,
// stores its hash, and returns it with its link (the only time the token
// is shown).
func (e *Edge) CreateSession(ctx context.Context, req admin.SessionRequest, ttl time.Duration) (admin.Session, error) {
	actor := admin.Actor(ctx)
	refuse := func(status int, format string, args ...any) (admin.Session, error) {
		msg := fmt.Sprintf(format, args...)
		e.audit(store.AuditEvent{Actor: actor, Action: "session.create", Subject: "for " + req.Service, Result: "refused: " + msg})
		return admin.Session{}, &admin.Error{Status: status, Message: msg}
	}
	if ttl < MinSessionTTL || ttl > MaxSessionTTL {
		return refuse(http.StatusBadRequest, "ttl %s out of range: use %s to %s (default %s)", ttl, MinSessionTTL, MaxSessionTTL, admin.DefaultSessionTTL)
	}
	svc, ok := e.current().services[req.Service]
	if !ok {
		return refuse(http.StatusNotFound, "no service named %q on this edge (see sallyport status)", req.Service)
	}
	if req.Connector != "" {
		if !wire.ValidName(req.Connector) {
			return refuse(http.StatusBadRequest, "bad connector name %q: %s", req.Connector, wire.NameRule)
		}
		holder, err := e.enrolledAs(ctx, req.Connector)
		if err != nil {
			return admin.Session{}, err
		}
		if holder.ID == "" {
			return refuse(http.StatusNotFound, "no connector named %s is enrolled (see sallyport connectors list)", req.Connector)
		}
	}
	// A service published by Host gets an HTTP session, on its own
	// host; any other a WebSocket session, on an edge host.
	var base, host string
	if len(svc.Hosts) > 0 {
		if base, host, ok = e.httpSessionBase(svc); !ok {
			return refuse(http.StatusConflict, "service %s has no host name a link can point at: its hosts are all wildcards (or there is no http or https listener); add an exact name to its hosts", req.Service)
		}
	} else if base, ok = e.sessionBase(); !ok {
		return refuse(http.StatusConflict, "service %s is not reachable over WebSocket: no http or https listener has an edge_hosts name (a name that is not a wildcard); add one under listeners", req.Service)
	}
	tok, err := enroll.NewToken()
	if err != nil {
		return admin.Session{}, err
	}
	now := e.now().UTC()
	se := store.Session{ID: tok.ID, SecretHash: enroll.HashSecret(tok.Secret), Service: req.Service, Connector: req.Connector,
		CreatedAt: now, CreatedBy: actor, ExpiresAt: now.Add(ttl), Host: host}
	if err := e.st.CreateSession(ctx, se); err != nil {
		return admin.Session{}, fmt.Errorf("store the new session: %w", err)
	}
	e.log.Info("session created", "session", se.ID, "service", se.Service, "connector", se.Connector, "host", se.Host, "expires", se.ExpiresAt)
	e.audit(store.AuditEvent{Actor: actor, Action: "session.create", Subject: "session " + se.ID + " for " + se.Service, Result: "ok",
		Detail: fmt.Sprintf("connector %q, expires %s", se.Connector, se.ExpiresAt.Format(time.RFC3339))})
	v := sessionView(se, now)
	v.Token = tok.SessionString()
	if host != "" {
		v.URL = base + ingress.SessionLinkPath + v.Token
		return v, nil
	}
	v.URL = base + "/s/" + v.Token
	v.Subprotocol = ingress.SessionSubprotocol + v.Token
	v.Page = sessionpage.Link(base, v.Token)
	return v, nil
}

// sessionBase is the scheme and authority of session links: the first
// exact edge host of an https listener (wss), else of an http one (ws),
// with the listener's port unless it is the scheme's default.
func (e *Edge) sessionBase() (string, bool) {
	for _, kind := range []string{config.KindHTTPS, config.KindHTTP} {
		for i, l := range e.current().listeners {
			if l.Kind != kind {
				continue
			}
			for _, h := range l.EdgeHosts {
				if strings.Contains(h, "*") {
					continue
				}
				scheme, def := "wss", "443"
				if kind == config.KindHTTP {
					scheme, def = "ws", "80"
				}
				port := ""
				if a := e.listeners.ListenerAddr(i); a != nil {
					_, port, _ = net.SplitHostPort(a.String())
				}
				if port == "" || port == def {
					if strings.Contains(h, ":") {
						h = "[" + h + "]"
					}
					return scheme + "://" + h, true
				}
				return scheme + "://" + net.JoinHostPort(h, port), true
			}
		}
	}
	return "", false
}

// Sessions lists the sessions, newest first, for the admin API.
func (e *Edge) Sessions(ctx context.Context) ([]admin.Session, error) {
	ss, err := e.st.ListSessions(ctx)
	if err != nil {
		return nil, storeError("list sessions", err)
	}
	now := e.now()
	out := make([]admin.Session, 0, len(ss))
	for _, se := range ss {
		out = append(out, sessionView(se, now))
	}
	slices.SortFunc(out, func(a, b admin.Session) int { return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.ID, b.ID)) })
	return out, nil
}

// RevokeSession makes an unused session's link useless, and ends a used
// one: an HTTP session's cookie admits no more requests, and a WebSocket
// session's connection is closed, on any edge once the store's watch
// brings the change (on this one at once).
func (e *Edge) RevokeSession(ctx context.Context, id string) (admin.Session, error) {
	now := e.now().UTC()
	se, err := e.st.UpdateSession(ctx, id, func(se *store.Session) error {
		if !se.Revoked() {
			se.RevokedAt = now
		}
		return nil
	})
	if err != nil {
		e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "session.revoke", Subject: "session " + id, Result: "refused: " + err.Error()})
		return admin.Session{}, storeError("revoke session "+id, err)
	}
	e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "session.revoke", Subject: "session " + se.ID, Result: "ok", Detail: "for " + se.Service})
	e.cookies.put(se, now)
	e.cutSession(se.ID)
	e.log.Info("session revoked", "session", se.ID, "service", se.Service)
	return sessionView(se, now), nil
}

func sessionView(se store.Session, now time.Time) admin.Session {
	v := admin.Session{ID: se.ID, Service: se.Service, Connector: se.Connector, CreatedAt: se.CreatedAt, ExpiresAt: se.ExpiresAt,
		UsedAt: se.UsedAt, UsedBy: se.UsedBy, RevokedAt: se.RevokedAt, Host: se.Host}
	switch {
	case se.Revoked(): // only an HTTP session is revoked once used
		v.State = "revoked"
	case se.Used():
		v.State = "used"
	case !now.Before(se.ExpiresAt):
		v.State = "expired"
	default:
		v.State = "unused"
	}
	return v
}

// checkSession is the redemption policy; it runs again inside the
// compare-and-swap, so a session used meanwhile is seen as used. The
// secret is compared first, in constant time, so that nothing about a
// session is told to one who does not hold its token.
func checkSession(se store.Session, secret string, now time.Time) string {
	switch {
	case !enroll.SecretMatches(se.SecretHash, secret):
		return SessionUnknown
	case se.Used():
		return SessionUsed
	case se.Revoked():
		return SessionRevoked
	case !now.Before(se.ExpiresAt):
		return SessionExpired
	}
	return ""
}

// sessionRefusal is a refused redemption: what the client is told.
type sessionRefusal string

func (r sessionRefusal) Error() string { return string(r) }

// OpenSession redeems a one-time session token for client c and opens a
// stream to the session's service (on its connector, if it names one),
// which holds the service's policy slot. A malformed or forged token
// costs no store write (a malformed one not even a read); the policy and
// a route are checked before the session is consumed, so a client turned
// away for a full service keeps its link. The session is consumed by
// compare-and-swap: of many clients, on any number of edges, one wins.
// Refusals for sessions carry SessionUsed, SessionExpired, SessionRevoked
// or SessionUnknown as their Msg.
func (e *Edge) OpenSession(token string, c admission.Client) (ingress.Stream, *admission.Refusal) {
	refuse := func(msg, service string) *admission.Refusal {
		return e.Refused(&admission.Refusal{Reason: admission.ReasonSession, Service: service, Msg: msg}, c)
	}
	if ref := e.fencedClient("", c); ref != nil {
		return nil, ref
	}
	id, secret, err := enroll.ParseSessionToken(token)
	if err != nil {
		return nil, refuse(SessionUnknown, "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionStoreTimeout)
	defer cancel()
	actor := "client " + c.Addr.String() + " via " + c.Via
	se, err := e.st.GetSession(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidID) {
			return nil, refuse(SessionUnknown, "")
		}
		e.log.Error("session: the store cannot be read", "session", id, "err", err)
		return nil, e.Refused(admission.Refuse(admission.ReasonNoConnector, "", "sessions cannot be checked right now; try again later"), c)
	}
	now := e.now().UTC()
	why := checkSession(se, secret, now)
	if why == "" && se.Host != "" {
		// An HTTP session's link is used on its host, never here.
		e.auditRefusal(store.AuditEvent{Actor: actor, Action: "session.use", Subject: "session " + id + " for " + se.Service, Result: "refused: an HTTP session's link presented as a WebSocket one"})
		return nil, refuse(SessionUnknown, se.Service)
	}
	if why != "" {
		if why != SessionUnknown { // a real link misused; forgeries are only logged
			e.auditRefusal(store.AuditEvent{Actor: actor, Action: "session.use", Subject: "session " + id + " for " + se.Service, Result: "refused: " + why})
		}
		return nil, refuse(why, se.Service)
	}
	c.Session = id
	release, ref := e.Admit(se.Service, c)
	if ref != nil {
		return nil, ref
	}
	sess := e.sessionRoute(se.Service, se.Connector)
	if sess == nil {
		release()
		on := ""
		if se.Connector != "" {
			on = " on connector " + se.Connector
		}
		return nil, e.Refused(admission.Refuse(admission.ReasonNoConnector, se.Service, "no connector offers service %s%s right now; the link is still unused: try again later", se.Service, on), c)
	}
	by := c.Addr.String() + " via " + e.id
	_, err = e.st.UpdateSession(ctx, id, func(s *store.Session) error {
		if why := checkSession(*s, secret, now); why != "" {
			return sessionRefusal(why)
		}
		s.UsedAt, s.UsedBy = now, by
		return nil
	})
	if err != nil {
		release()
		var why sessionRefusal
		if errors.As(err, &why) {
			e.auditRefusal(store.AuditEvent{Actor: actor, Action: "session.use", Subject: "session " + id + " for " + se.Service, Result: "refused: " + string(why)})
			return nil, refuse(string(why), se.Service)
		}
		e.log.Error("session: could not be consumed", "session", id, "err", err)
		return nil, e.Refused(admission.Refuse(admission.ReasonNoConnector, se.Service, "sessions cannot be checked right now; try again later"), c)
	}
	e.audit(store.AuditEvent{Actor: actor, Action: "session.use", Subject: "session " + id + " for " + se.Service, Result: "ok", Detail: "carried by " + e.id})
	st, ref := e.openOn(sess, se.Service, c)
	if ref != nil {
		release()
		return nil, ref
	}
	e.carry(id, st)
	st.Hold(func() { release(); e.uncarry(id, st) })
	e.log.Info("session used", "session", id, "service", se.Service, "client", c.Addr.String(), "connector", st.connector)
	return st, nil
}

// carriedSessions are the WebSocket sessions an edge carries now, by
// session id: a revocation, made at this edge or at any other (the
// sessions watch brings it), ends the session's connection. One entry
// per live session connection, gone when it closes.
type carriedSessions struct {
	mu sync.Mutex
	by map[string]*streamConn
}

// carry records st as session id's connection.
func (e *Edge) carry(id string, st *streamConn) {
	e.carried.mu.Lock()
	defer e.carried.mu.Unlock()
	if e.carried.by == nil {
		e.carried.by = make(map[string]*streamConn)
	}
	e.carried.by[id] = st
}

// uncarry forgets st as session id's connection (it closed).
func (e *Edge) uncarry(id string, st *streamConn) {
	e.carried.mu.Lock()
	defer e.carried.mu.Unlock()
	if e.carried.by[id] == st {
		delete(e.carried.by, id)
	}
}

// cutSession ends session id's connection, if this edge carries it,
// telling its client that the session was revoked.
func (e *Edge) cutSession(id string) {
	e.carried.mu.Lock()
	st := e.carried.by[id]
	delete(e.carried.by, id)
	e.carried.mu.Unlock()
	if st == nil {
		return
	}
	e.log.Info("session revoked: its connection is ended", "session", id, "service", st.service, "client", st.client.Addr.String())
	st.end(&wire.Refusal{Code: wire.CodeRevoked, Reason: SessionRevoked})
}

// sessionRoute picks a tunnel that routes service, of the connector
// named connector if it is not empty; nil if there is none.
func (e *Edge) sessionRoute(service, connector string) *tunnel.Session {
	if connector == "" {
		sess, _ := e.pick(service)
		return sess
	}
	e.conns.Lock()
	defer e.conns.Unlock()
	for sess, info := range e.conns.byName[connector] {
		if e.routedLocked(info, service) {
			return sess
		}
	}
	return nil
}

// pruneSessions removes finished sessions from the store, as pruneTokens
// does for tokens.
func (e *Edge) pruneSessions(ctx context.Context) (int, error) {
	return e.st.PruneSessions(ctx, e.now().Add(-tokenRetention))
}
