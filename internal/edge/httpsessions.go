package edge

import (
	"container/heap"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/ingress"
	"github.com/sallyport/sallyport/internal/route"
	"github.com/sallyport/sallyport/internal/store"
)

// HTTP sessions. A session for a service published by Host has a link on
// one of its hosts, https://HOST/.sallyport/s/<token>; the link's first
// use consumes it (compare-and-swap, as for WebSocket sessions) and sets
// a cookie, <session id>.<second secret>, whose secret's hash the session
// keeps. Until the session ends (expiry or revocation) the cookie admits
// requests to that host, and to no other.
//
// Checking a cookie reads no store: the edge keeps the used HTTP sessions
// in memory (cookieSessions), fed by a watch on the store's sessions, so
// that a revocation on any edge reaches every edge as soon as JetStream
// delivers it (milliseconds); the edge that redeems or revokes a session
// applies it at once too.

// cookieSessions is what the edge knows of used HTTP sessions: enough to
// check a cookie. It is safe for concurrent use.
type cookieSessions struct {
	// mu guards byID and expiry.
	mu   sync.Mutex
	byID map[string]cookieSession
	// expiry orders what byID holds by expiry, so that put drops the
	// ended sessions without walking every live one (docs/cluster.md
	// §9.5); an entry whose session has been stored again since, with
	// another expiry, is skipped when it comes up.
	expiry expiryHeap
}

// expiring is a session id and when its entry in byID expires.
type expiring struct {
	id string
	at time.Time
}

// expiryHeap is a min-heap of expiries (container/heap).
type expiryHeap []expiring

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiring)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// store records x as session id's entry; cs.mu is held.
func (cs *cookieSessions) store(id string, x cookieSession) {
	old, had := cs.byID[id]
	cs.byID[id] = x
	if !had || !old.expires.Equal(x.expires) {
		heap.Push(&cs.expiry, expiring{id: id, at: x.expires})
	}
}

// expire drops the entries that have expired at now; cs.mu is held.
func (cs *cookieSessions) expire(now time.Time) {
	for len(cs.expiry) > 0 && !now.Before(cs.expiry[0].at) {
		e := heap.Pop(&cs.expiry).(expiring)
		if x, ok := cs.byID[e.id]; ok && x.expires.Equal(e.at) {
			delete(cs.byID, e.id)
		}
	}
}

// cookieSession is one used HTTP session, as a cookie is checked against.
type cookieSession struct {
	host    string // normalized
	hash    []byte // SHA-256 of the cookie's secret
	expires time.Time
	revoked bool
	rev     time.Time // the latest of UsedAt and RevokedAt: of two copies, the later wins
}

// put records se if it is a used HTTP session still running at now, and
// drops it (and any other that ended) otherwise.
func (cs *cookieSessions) put(se store.Session, now time.Time) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.byID == nil {
		cs.byID = make(map[string]cookieSession)
	}
	cs.expire(now)
	if se.Host == "" || len(se.CookieHash) == 0 {
		return
	}
	rev := se.UsedAt
	if se.RevokedAt.After(rev) {
		rev = se.RevokedAt
	}
	if old, ok := cs.byID[se.ID]; ok && (old.revoked || old.rev.After(rev)) {
		return // a revocation is never undone by an older copy
	}
	if se.Revoked() || !now.Before(se.ExpiresAt) {
		if se.Revoked() {
			// Kept until it expires, so that a late older copy cannot
			// bring it back.
			cs.store(se.ID, cookieSession{revoked: true, expires: se.ExpiresAt, rev: rev})
		}
		return
	}
	cs.store(se.ID, cookieSession{host: route.NormalizeHost(se.Host), hash: se.CookieHash, expires: se.ExpiresAt, rev: rev})
}

// check returns the session id of cookie value v if it admits host at now.
func (cs *cookieSessions) check(host, v string, now time.Time) (string, bool) {
	id, secret, ok := strings.Cut(v, ".")
	if !ok || id == "" || secret == "" {
		return "", false
	}
	cs.mu.Lock()
	x, ok := cs.byID[id]
	cs.mu.Unlock()
	// The hash is compared in constant time, and whatever the other
	// checks say, so that a forger learns nothing from timing.
	match := ok && enroll.SecretMatches(x.hash, secret)
	if !match || x.revoked || !now.Before(x.expires) || x.host != route.NormalizeHost(host) {
		return "", false
	}
	return id, true
}

// watchSessions loads the used HTTP sessions and keeps them current, and
// ends the connection of a WebSocket session revoked at any edge.
func (e *Edge) watchSessions(ctx context.Context) (stop func(), err error) {
	return e.st.WatchSessions(ctx, func(se store.Session) {
		e.cookies.put(se, e.now())
		if se.Revoked() {
			e.cutSession(se.ID) // a WebSocket session this edge carries
		}
	})
}

// SessionCookie implements ingress.Dispatcher: it checks a session cookie
// against the sessions in memory. In a cluster, the link may have been
// redeemed at another edge a moment ago, and the browser's next request
// come here before the sessions watch brought it: a cookie whose session
// this edge does not know at all is looked up in the store once, at most
// cookieReadsPerSecond in all (a flood of made-up cookies costs the
// store a bounded read rate, then gets what it got before: no session).
func (e *Edge) SessionCookie(host, value string) (string, bool) {
	now := e.now()
	if id, ok := e.cookies.check(host, value, now); ok {
		return id, true
	}
	id, _, ok := strings.Cut(value, ".")
	if !ok || e.cookies.knows(id) || !e.cookieReads.Allow() {
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionStoreTimeout)
	defer cancel()
	se, err := e.st.GetSession(ctx, id)
	if err != nil {
		return "", false
	}
	e.cookies.put(se, now)
	return e.cookies.check(host, value, now)
}

// Cookie lookups in the store (SessionCookie): a few a second suffice for
// the moments between a redemption at another edge and its watch here.
const (
	cookieReadsPerSecond = 20
	cookieReadsBurst     = 40
)

// knows reports whether the edge holds an entry for session id (a used
// HTTP session, or one revoked before it expires).
func (cs *cookieSessions) knows(id string) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	_, ok := cs.byID[id]
	return ok
}

// httpSessionBase is the scheme and authority of an HTTP session link for
// svc: its first exact host, https if the edge has an https listener
// (with its port unless 443), else http (with its port unless 80).
func (e *Edge) httpSessionBase(svc config.EdgeService) (base, host string, ok bool) {
	for _, h := range svc.Hosts {
		if !strings.Contains(h, "*") {
			host = route.NormalizeHost(h)
			break
		}
	}
	if host == "" {
		return "", "", false
	}
	for _, kind := range []string{config.KindHTTPS, config.KindHTTP} {
		for i, l := range e.current().listeners {
			if l.Kind != kind {
				continue
			}
			scheme, def := "https", "443"
			if kind == config.KindHTTP {
				scheme, def = "http", "80"
			}
			port := ""
			if a := e.listeners.ListenerAddr(i); a != nil {
				_, port, _ = net.SplitHostPort(a.String())
			}
			h := host
			if strings.Contains(h, ":") {
				h = "[" + h + "]"
			}
			if port == "" || port == def {
				return scheme + "://" + h, host, true
			}
			return scheme + "://" + net.JoinHostPort(host, port), host, true
		}
	}
	return "", "", false
}

// RedeemLink implements ingress.Dispatcher: it consumes an HTTP session's
// link presented on host by compare-and-swap and returns the cookie value
// to set, good until expires. The service's policy is applied first (and
// its slot given back at once), so that a client it turns away keeps the
// link. A link presented on a host other than its own is refused as
// unknown and stays unused. Refusals carry SessionUsed, SessionExpired,
// SessionRevoked or SessionUnknown as their Msg.
func (e *Edge) RedeemLink(token, host string, c admission.Client) (cookie string, expires time.Time, _ *admission.Refusal) {
	refuse := func(msg, service string) (string, time.Time, *admission.Refusal) {
		return "", time.Time{}, e.Refused(&admission.Refusal{Reason: admission.ReasonSession, Service: service, Msg: msg}, c)
	}
	if ref := e.fencedClient("", c); ref != nil {
		return "", time.Time{}, ref
	}
	id, secret, err := enroll.ParseSessionToken(token)
	if err != nil {
		return refuse(SessionUnknown, "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionStoreTimeout)
	defer cancel()
	actor := "client " + c.Addr.String() + " via " + c.Via
	subject := "session " + id
	se, err := e.st.GetSession(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalidID) {
			return refuse(SessionUnknown, "")
		}
		e.log.Error("session: the store cannot be read", "session", id, "err", err)
		return "", time.Time{}, e.Refused(admission.Refuse(admission.ReasonNoConnector, "", "sessions cannot be checked right now; try again later"), c)
	}
	subject += " for " + se.Service
	now := e.now().UTC()
	why := checkSession(se, secret, now)
	if why == "" && (se.Host == "" || se.Host != route.NormalizeHost(host)) {
		// A WebSocket session's link, or one of another host: the
		// holder learns nothing more than from a forgery.
		e.auditRefusal(store.AuditEvent{Actor: actor, Action: "session.use", Subject: subject, Result: "refused: presented on host " + host})
		return refuse(SessionUnknown, se.Service)
	}
	if why != "" {
		if why != SessionUnknown {
			e.auditRefusal(store.AuditEvent{Actor: actor, Action: "session.use", Subject: subject, Result: "refused: " + why})
		}
		return refuse(why, se.Service)
	}
	c.Session = id
	release, ref := e.Admit(se.Service, c)
	if ref != nil {
		return "", time.Time{}, ref
	}
	release()
	cookieSecret := rand.Text()
	by := c.Addr.String() + " via " + e.id
	se, err = e.st.UpdateSession(ctx, id, func(s *store.Session) error {
		if why := checkSession(*s, secret, now); why != "" {
			return sessionRefusal(why)
		}
		s.UsedAt, s.UsedBy, s.CookieHash = now, by, enroll.HashSecret(cookieSecret)
		return nil
	})
	if err != nil {
		var why sessionRefusal
		if errors.As(err, &why) {
			e.auditRefusal(store.AuditEvent{Actor: actor, Action: "session.use", Subject: subject, Result: "refused: " + string(why)})
			return refuse(string(why), se.Service)
		}
		e.log.Error("session: could not be consumed", "session", id, "err", err)
		return "", time.Time{}, e.Refused(admission.Refuse(admission.ReasonNoConnector, se.Service, "sessions cannot be checked right now; try again later"), c)
	}
	e.cookies.put(se, now) // the redirected request may come before the watch
	e.audit(store.AuditEvent{Actor: actor, Action: "session.use", Subject: subject, Result: "ok", Detail: "cookie for host " + se.Host + " set by " + e.id})
	e.log.Info("session used", "session", id, "service", se.Service, "client", c.Addr.String(), "host", se.Host)
	return id + "." + cookieSecret, se.ExpiresAt, nil
}

var _ ingress.Dispatcher = (*Edge)(nil)
