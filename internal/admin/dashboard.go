package admin

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/loglimit"
	"github.com/sallyport/sallyport/internal/slowdown"
)

// The dashboard: server-rendered pages under /ui/ on the admin listener,
// behind a login with the admin token. Pages read through the same
// Backend as the API, and its forms call the same methods; no script
// runs (the overview reloads itself with a meta refresh).
//
//	GET  /ui/login          the login form
//	POST /ui/login          token → session cookie, then /ui/
//	POST /ui/logout         ends the session
//	GET  /ui/               services, connectors, live connections, refusals
//	GET  /ui/manage         forms, sessions, the audit trail
//	POST /ui/keyfile        create a keyfile (shown once)
//	POST /ui/grant          grant or ungrant a service
//	POST /ui/revoke         revoke a connector
//	POST /ui/session        create a session link (shown once)
//	GET  /ui/dashboard.css  the style sheet, and /ui/favicon.svg

//go:embed ui
var uiFiles embed.FS

// uiCSP lets a page load its style sheet and submit its forms to its own
// origin, nothing else: no script at all, no frames, no other site.
const uiCSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// How much the pages show.
const (
	uiAuditEvents = 50             // the newest audit events on the manage page
	uiAuditWindow = 24 * time.Hour // read from the trail, for them
	uiRefresh     = 5              // seconds between the overview's reloads
	uiReadTimeout = 5 * time.Second
)

// dashboard serves /ui/. It is safe for concurrent use.
type dashboard struct {
	b     Backend
	token string
	log   *slog.Logger
	now   func() time.Time
	pages map[string]*template.Template

	sessions *uiSessions
	// backoff slows failed logins by source address; waiting holds a
	// slot for each login while it is checked and, if it failed, slowed
	// down (uiLoginsWaiting).
	backoff slowdown.Failures
	waiting chan struct{}
	// busyLines limits the lines about logins refused unchecked.
	busyLines loglimit.Limiter
}

// newDashboard returns the dashboard for the admin listener whose token
// is token.
func newDashboard(b Backend, token string, log *slog.Logger) *dashboard {
	d := &dashboard{b: b, token: token, log: log, now: time.Now,
		waiting: make(chan struct{}, uiLoginsWaiting), busyLines: loglimit.Limiter{Lines: 1}}
	d.sessions = newUISessions(func() time.Time { return d.now() })
	d.pages = parsePages()
	return d
}

// parsePages parses each page with the layout; a template that does not
// parse is a bug caught by every test that starts an edge.
func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{
		"bytes": humanBytes, "age": func(t time.Time) string { return humanAge(time.Since(t)) },
		"until": humanUntil, "join": strings.Join, "stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "overview", "manage", "shown"} {
		pages[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(uiFiles, "ui/layout.html", "ui/"+name+".html"))
	}
	return pages
}

// routes adds the dashboard's routes to mux.
func (d *dashboard) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusSeeOther) })
	mux.HandleFunc("GET /ui/dashboard.css", d.serveFile("ui/dashboard.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /ui/favicon.svg", d.serveFile("ui/favicon.svg", "image/svg+xml"))
	mux.HandleFunc("GET /ui/login", d.loginForm)
	mux.HandleFunc("POST /ui/login", d.login)
	mux.HandleFunc("POST /ui/logout", d.action(d.logout))
	mux.HandleFunc("GET /ui/{$}", d.page("overview", d.overview))
	mux.HandleFunc("GET /ui/manage", d.page("manage", d.manage))
	mux.HandleFunc("POST /ui/keyfile", d.action(d.createKeyfile))
	mux.HandleFunc("POST /ui/grant", d.action(d.grant))
	mux.HandleFunc("POST /ui/revoke", d.action(d.revoke))
	mux.HandleFunc("POST /ui/session", d.action(d.createSession))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		d.headers(w)
		http.Error(w, "no such page, or not with "+r.Method+": the dashboard is at /ui/", http.StatusNotFound)
	})
}

// headers sets what every dashboard answer carries.
func (d *dashboard) headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// serveFile serves an embedded file, to anyone: the login page needs them.
func (d *dashboard) serveFile(name, contentType string) http.HandlerFunc {
	b, err := uiFiles.ReadFile(name)
	if err != nil {
		panic("dashboard: " + err.Error()) // a file the build embeds
	}
	return func(w http.ResponseWriter, r *http.Request) {
		d.headers(w)
		w.Header().Set("Content-Type", contentType)
		w.Write(b)
	}
}

// view is what a page's template gets.
type view struct {
	Title   string
	CSRF    string // empty on the login page: no session yet
	Flash   flash
	Error   string
	Refresh int // seconds; 0: no reload
	Edge    string
	Fenced  bool
	Data    any
}

// render writes page with v and status.
func (d *dashboard) render(w http.ResponseWriter, status int, page string, v view) {
	d.headers(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := d.pages[page].Execute(w, v); err != nil {
		d.log.Warn("dashboard: page not written whole", "page", page, "err", err)
	}
}

// withActor names the dashboard's user in r's context, for the audit
// records the Backend makes.
func withActor(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), actorKey{}, "admin via dashboard from "+r.RemoteAddr))
}

// page serves a page to a logged-in browser: fill returns its data (an
// error is shown on the page). Without a session it sends the browser to
// the login form. A page changes nothing.
func (d *dashboard) page(name string, fill func(*http.Request, Status, *view)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := d.sessions.get(sessionID(r))
		if !ok {
			d.headers(w)
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		st := d.b.Status(r.Context())
		v := view{CSRF: sess.csrf, Flash: sess.flash, Edge: st.EdgeID, Fenced: st.Fenced}
		fill(withActor(r), st, &v)
		d.render(w, http.StatusOK, name, v)
	}
}

// action serves a form's POST from a logged-in browser of the dashboard's
// own pages: it needs the session's cookie, its CSRF token and a
// same-origin request. Any of them missing is refused with 403, changes
// nothing and is audited. do writes the answer; what it returns is
// audited.
func (d *dashboard) action(do func(http.ResponseWriter, *http.Request, string) int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r = withActor(r)
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		id := sessionID(r)
		sess, ok := d.sessions.get(id)
		var why string
		switch {
		case !ok:
			why = "not logged in, or the session has ended: log in again at /ui/login"
		case !tokenEqual(r.PostFormValue("csrf"), sess.csrf):
			why = "the form's CSRF token is missing or not this session's: reload the page and try again"
		default:
			ok, why = sameOrigin(r)
		}
		if why != "" {
			d.log.Warn("dashboard request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "reason", why)
			d.headers(w)
			http.Error(w, "refused: "+why, http.StatusForbidden)
			d.b.Called(r.Context(), r.Method, r.URL.Path, http.StatusForbidden)
			return
		}
		d.b.Called(r.Context(), r.Method, r.URL.Path, do(w, r, id))
	}
}

// done ends an action that changed something: the message is shown on
// the page the browser is sent to (303, so a reload does not repeat it).
func (d *dashboard) done(w http.ResponseWriter, r *http.Request, id, to string, msg flash) int {
	d.sessions.setFlash(id, msg)
	d.headers(w)
	http.Redirect(w, r, to, http.StatusSeeOther)
	return http.StatusOK
}

// failed ends an action that the Backend refused, as done does, with the
// refusal's words; it returns the refusal's status for the audit.
func (d *dashboard) failed(w http.ResponseWriter, r *http.Request, id, to string, err error) int {
	d.done(w, r, id, to, flash{Text: "Refused: " + err.Error(), Bad: true})
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusInternalServerError
}
