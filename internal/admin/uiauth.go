package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"
)

// Dashboard sessions: a login with the admin token makes one, held in the
// edge's memory only, and named by a cookie. They end after an idle spell
// or at an absolute limit, at logout, or when the edge restarts.
const (
	uiSessionIdle = 30 * time.Minute
	uiSessionMax  = 12 * time.Hour
	// uiMaxSessions bounds the sessions held; a login beyond it ends the
	// oldest. Only a holder of the token can log in.
	uiMaxSessions = 64
	// uiLoginsWaiting bounds the failed logins being slowed down at once
	// (each waits out its address's backoff): beyond it a login is
	// refused at once, unchecked, so that guesses cannot be sent in
	// parallel to outrun the backoff.
	uiLoginsWaiting = 8
)

// Cookie names: over TLS the __Secure- prefix makes the browser insist on
// Secure; over plain http (the loopback default) no prefix is possible.
const (
	uiCookie       = "sallyport_ui"
	uiCookieSecure = "__Secure-sallyport_ui"
)

// uiSession is one logged-in browser.
type uiSession struct {
	// csrf is the token every form of the session carries.
	csrf    string
	created time.Time
	seen    time.Time
	// flash is a message for the next page the session sees.
	flash flash
}

// flash is the outcome of an action, shown once on the next page.
type flash struct {
	Text string
	Bad  bool // a refusal
}

// uiSessions holds the dashboard's sessions by the SHA-256 of their id
// (so that neither a lookup's timing nor a memory dump gives an id away).
// It is safe for concurrent use.
type uiSessions struct {
	now func() time.Time

	// state guards the sessions.
	state struct {
		sync.Mutex
		m map[[32]byte]*uiSession
	}
}

func newUISessions(now func() time.Time) *uiSessions {
	s := &uiSessions{now: now}
	s.state.m = make(map[[32]byte]*uiSession)
	return s
}

// random256 returns 256 random bits, in hex.
func random256() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// create makes a session and returns its id, the cookie's value.
func (s *uiSessions) create() string {
	id := random256()
	now := s.now()
	s.state.Lock()
	defer s.state.Unlock()
	s.pruneLocked(now)
	if len(s.state.m) >= uiMaxSessions {
		var oldest [32]byte
		var at time.Time
		for k, v := range s.state.m {
			if at.IsZero() || v.created.Before(at) {
				oldest, at = k, v.created
			}
		}
		delete(s.state.m, oldest)
	}
	s.state.m[sha256.Sum256([]byte(id))] = &uiSession{csrf: random256(), created: now, seen: now}
	return id
}

// get returns the live session id names, marking it seen and taking its
// flash message; ok is false for an unknown or expired id.
func (s *uiSessions) get(id string) (sess uiSession, ok bool) {
	now := s.now()
	s.state.Lock()
	defer s.state.Unlock()
	s.pruneLocked(now)
	p, ok := s.state.m[sha256.Sum256([]byte(id))]
	if !ok {
		return uiSession{}, false
	}
	p.seen = now
	sess = *p
	p.flash = flash{}
	return sess, true
}

// setFlash leaves msg for the session's next page.
func (s *uiSessions) setFlash(id string, msg flash) {
	s.state.Lock()
	defer s.state.Unlock()
	if p, ok := s.state.m[sha256.Sum256([]byte(id))]; ok {
		p.flash = msg
	}
}

// delete ends the session id names.
func (s *uiSessions) delete(id string) {
	s.state.Lock()
	defer s.state.Unlock()
	delete(s.state.m, sha256.Sum256([]byte(id)))
}

// pruneLocked ends the sessions idle or old beyond their limits.
func (s *uiSessions) pruneLocked(now time.Time) {
	for k, v := range s.state.m {
		if now.Sub(v.seen) >= uiSessionIdle || now.Sub(v.created) >= uiSessionMax {
			delete(s.state.m, k)
		}
	}
}

// sessionID returns the session cookie's value in r, if any.
func sessionID(r *http.Request) string {
	name := uiCookie
	if r.TLS != nil {
		name = uiCookieSecure
	}
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// setSessionCookie sets (or, with an empty id, deletes) the session
// cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's
// page sends it), Path=/ui (never sent to the API), Secure over TLS.
// It has no Expires: the browser forgets it when it closes, and the edge
// ends the session on its own terms.
func setSessionCookie(w http.ResponseWriter, r *http.Request, id string) {
	c := &http.Cookie{Name: uiCookie, Value: id, Path: "/ui", HttpOnly: true, SameSite: http.SameSiteStrictMode}
	if r.TLS != nil {
		c.Name, c.Secure = uiCookieSecure, true
	}
	if id == "" {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// sameOrigin reports whether a state-changing request comes from the
// dashboard's own pages. The browser's Sec-Fetch-Site says so where it
// sends one (every current browser): it must be same-origin. Without it,
// the Origin must be the dashboard's. (With Referrer-Policy no-referrer,
// Chromium sends "Origin: null" even from the same origin, so a null
// Origin counts only beside Sec-Fetch-Site.) A request with neither is
// refused: other clients have the API. The Origin's host and port are
// compared with the request's Host, not its scheme, so that a proxy that
// terminates TLS in front of the admin listener (and keeps the Host)
// works.
func sameOrigin(r *http.Request) (ok bool, why string) {
	site, origin := r.Header.Get("Sec-Fetch-Site"), r.Header.Get("Origin")
	switch {
	case site != "" && site != "same-origin":
		return false, "the request came from another site (Sec-Fetch-Site: " + site + ")"
	case origin != "" && origin != "null" && originHost(origin) != r.Host:
		return false, "the request came from another origin (" + origin + ")"
	case site == "" && (origin == "" || origin == "null"):
		return false, "the request has neither an Origin nor a Sec-Fetch-Site header: use a current browser, or the API (/v1) with the bearer token"
	}
	return true, ""
}

// originHost is an Origin header's host[:port]; "" if it is not an
// http or https origin.
func originHost(origin string) string {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" {
		return ""
	}
	return u.Host
}

// tokenEqual compares secrets in constant time.
func tokenEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// remoteIP is the request's source address, for the login backoff.
func remoteIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}
