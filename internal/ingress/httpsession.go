package ingress

import (
	"fmt"
	"html"
	"net/http"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
)

// HTTP session links and cookies, on the hosts of services published by
// Host. The link's path is the edge's on every such host, ahead of the
// service's routing: the back-end never sees it.
const SessionLinkPath = "/.sallyport/s/"

// The session cookie's names: over https the __Host- prefix makes
// browsers keep it host-only, Secure and at Path=/ whatever a sibling
// host tries; over plain http (an edge with no https listener) a Secure
// cookie would never come back, so it has neither.
const (
	sessionCookieTLS   = "__Host-sallyport-session"
	sessionCookiePlain = "sallyport-session"
)

// serveLink redeems an HTTP session's link presented on host: the
// Dispatcher consumes it by compare-and-swap and the client gets the
// session cookie and a 303 to / (always /: the link names no target, so
// it cannot redirect elsewhere). A refused client gets a short page with
// the reason and no cookie; refusals of an address that keeps presenting
// bad links are slowed, as for WebSocket links. Only GET consumes a link
// (a HEAD from a link checker does not); a cross-site page that makes a
// browser GET it uses it up, by design: the link is one-time, and the
// cookie lands in the browser that followed it. The token is never
// logged.
func (f *httpListener) serveLink(w http.ResponseWriter, r *http.Request, token, host string, c admission.Client) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet {
		h.Set("Allow", http.MethodGet)
		writePage(w, http.StatusMethodNotAllowed, "Open this link in a browser", "A session link is used by opening it (GET); it is still unused.")
		return
	}
	if r.TLS == nil && f.s.current().anyHTTPS {
		writePage(w, http.StatusForbidden, "Use the https link", "This edge serves session links over https only; the link is still unused.")
		return
	}
	cookie, expires, ref := f.s.d.RedeemLink(token, host, c)
	if ref != nil {
		if ref.Reason == admission.ReasonSession {
			if d := f.s.sessionBackoff.Failed(c.IP(), f.s.now()); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-r.Context().Done():
				}
				t.Stop()
			}
		}
		a := answerFor(ref)
		if a.retry {
			h.Set("Retry-After", "1")
		}
		writePage(w, a.http, "This link cannot be used", ref.Msg+".")
		return
	}
	f.s.sessionBackoff.Succeeded(c.IP())
	ck := &http.Cookie{Name: sessionCookiePlain, Value: cookie, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		MaxAge: max(1, int(expires.Sub(f.s.now())/time.Second))}
	if r.TLS != nil {
		ck.Name, ck.Secure = sessionCookieTLS, true
	}
	http.SetCookie(w, ck)
	h.Set("Location", "/")
	w.WriteHeader(http.StatusSeeOther)
}

// sessionCookie returns the session a request's cookie stands for on
// host, if one of its session cookies is valid there now.
func (f *httpListener) sessionCookie(r *http.Request, host string) string {
	name := sessionCookiePlain
	if r.TLS != nil {
		name = sessionCookieTLS
	}
	for _, ck := range r.CookiesNamed(name) {
		if id, ok := f.s.d.SessionCookie(host, ck.Value); ok {
			return id
		}
	}
	return ""
}

// stripSessionCookies removes the session cookies from a request's Cookie
// headers, leaving the others as they were: the back-end never sees them.
func stripSessionCookies(h http.Header) {
	vals := h.Values("Cookie")
	stripped := false
	var keep []string
	for _, v := range vals {
		for part := range strings.SplitSeq(v, ";") {
			p := strings.TrimSpace(part)
			name, _, _ := strings.Cut(p, "=")
			switch {
			case name == sessionCookieTLS || name == sessionCookiePlain:
				stripped = true
			case p != "":
				keep = append(keep, p)
			}
		}
	}
	if !stripped {
		return
	}
	h.Del("Cookie")
	if len(keep) > 0 {
		h.Set("Cookie", strings.Join(keep, "; "))
	}
}

// writeSessionRequired answers a request to a service that requires a
// session and came without a valid cookie: 401 and a page that says a
// link is needed.
func writeSessionRequired(w http.ResponseWriter, ref *admission.Refusal) {
	w.Header().Set("WWW-Authenticate", `SallyportSession realm="sallyport"`)
	writePage(w, http.StatusUnauthorized, "A session link is needed",
		ref.Msg+". Open the one-time link you were given; if it was used or has expired, ask for a new one.")
}

// writePage writes a short HTML page from the edge itself.
func writePage(w http.ResponseWriter, status int, title, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n<body><h1>%s</h1>\n<p>%s</p>\n<p><small>sallyport</small></p></body></html>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(msg))
}
