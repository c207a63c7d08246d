package admin

import (
	"context"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/store"
)

// loginForm shows the login form, or sends a logged-in browser on.
func (d *dashboard) loginForm(w http.ResponseWriter, r *http.Request) {
	if _, ok := d.sessions.get(sessionID(r)); ok {
		d.headers(w)
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	d.render(w, http.StatusOK, "login", view{Title: "Log in"})
}

// login checks the admin token a browser sends from the login form and
// gives it a new session. A login from another site is refused (login
// CSRF: an attacker's page must not log a browser into a session of
// the attacker's). A wrong token is answered after the source address's
// backoff and audited; beyond uiLoginsWaiting failed logins at once,
// logins are refused unchecked.
func (d *dashboard) login(w http.ResponseWriter, r *http.Request) {
	r = withActor(r)
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if ok, why := sameOrigin(r); !ok {
		d.log.Warn("dashboard login refused", "remote", r.RemoteAddr, "reason", why)
		d.b.Called(r.Context(), r.Method, r.URL.Path, http.StatusForbidden)
		d.render(w, http.StatusForbidden, "login", view{Title: "Log in", Error: "Refused: " + why})
		return
	}
	select {
	case d.waiting <- struct{}{}:
		defer func() { <-d.waiting }()
	default:
		// Not audited: a flood of these would fill the trail.
		if say, more := d.busyLines.Allow(nil, d.now()); say {
			d.log.Warn("dashboard logins refused unchecked: too many failed logins at once", "remote", r.RemoteAddr, "more_since_last_line", more)
		}
		d.render(w, http.StatusTooManyRequests, "login", view{Title: "Log in",
			Error: "Too many failed logins are being answered right now; wait a few seconds and try again."})
		return
	}
	ip := remoteIP(r)
	if !tokenEqual(strings.TrimSpace(r.PostFormValue("token")), d.token) {
		wait := time.NewTimer(d.backoff.Failed(ip, d.now()))
		select {
		case <-wait.C:
		case <-r.Context().Done():
			wait.Stop()
		}
		d.log.Warn("dashboard login refused: wrong admin token", "remote", r.RemoteAddr)
		d.b.Called(r.Context(), r.Method, r.URL.Path, http.StatusUnauthorized)
		d.render(w, http.StatusUnauthorized, "login", view{Title: "Log in",
			Error: "Wrong token: use the admin token in the edge's data directory (the file admin.token)."})
		return
	}
	d.backoff.Succeeded(ip)
	if old := sessionID(r); old != "" {
		d.sessions.delete(old) // a login never reuses a session id it was given
	}
	setSessionCookie(w, r, d.sessions.create())
	d.log.Info("dashboard login", "remote", r.RemoteAddr)
	d.b.Called(r.Context(), r.Method, r.URL.Path, http.StatusSeeOther)
	d.headers(w)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// logout ends the session.
func (d *dashboard) logout(w http.ResponseWriter, r *http.Request, id string) int {
	d.sessions.delete(id)
	setSessionCookie(w, r, "")
	d.headers(w)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	return http.StatusSeeOther
}

// overviewData is the overview page's.
type overviewData struct {
	Services   []ServiceStatus
	Connectors []Connector
	Live       []LiveConn
	Refusals   []Refusal
}

// overview fills the overview: what the edge serves and carries now.
func (d *dashboard) overview(r *http.Request, st Status, v *view) {
	v.Title, v.Refresh = "Overview", uiRefresh
	data := overviewData{Services: st.Services, Live: d.b.Live(), Refusals: d.b.RecentRefusals()}
	var err error
	if data.Connectors, err = d.b.Connectors(r.Context()); err != nil {
		v.Error = "The connectors cannot be listed: " + err.Error()
	}
	v.Data = data
}

// manageData is the manage page's.
type manageData struct {
	Connectors []Connector
	Services   []ServiceStatus
	Sessions   []Session
	Audit      []store.AuditEvent // newest first
}

// manage fills the manage page: the forms, the sessions and the newest
// events of the audit trail.
func (d *dashboard) manage(r *http.Request, st Status, v *view) {
	v.Title = "Manage"
	ctx, cancel := context.WithTimeout(r.Context(), uiReadTimeout)
	defer cancel()
	data := manageData{Services: st.Services}
	var problems []string
	var err error
	if data.Connectors, err = d.b.Connectors(ctx); err != nil {
		problems = append(problems, "the connectors cannot be listed: "+err.Error())
	}
	if data.Sessions, err = d.b.Sessions(ctx); err != nil {
		problems = append(problems, "the sessions cannot be listed: "+err.Error())
	}
	if data.Audit, err = d.newestAudit(ctx); err != nil {
		problems = append(problems, "the audit trail cannot be read: "+err.Error())
	}
	if len(problems) > 0 {
		v.Error = strings.Join(problems, "; ")
	}
	v.Data = data
}

// newestAudit returns the newest uiAuditEvents events of the last
// uiAuditWindow, newest first: the trail is read once, keeping a ring.
func (d *dashboard) newestAudit(ctx context.Context) ([]store.AuditEvent, error) {
	ring := make([]store.AuditEvent, 0, uiAuditEvents)
	next := 0
	err := d.b.ReadAudit(ctx, d.now().Add(-uiAuditWindow), false, func(ev store.AuditEvent) error {
		if len(ring) < uiAuditEvents {
			ring = append(ring, ev)
		} else {
			ring[next] = ev
		}
		next = (next + 1) % uiAuditEvents
		return nil
	})
	slices.SortFunc(ring, func(a, b store.AuditEvent) int { return -a.Time.Compare(b.Time) })
	return ring, err
}

// shownData is a secret shown once: a keyfile or a session link.
type shownData struct {
	What     string // "keyfile" or "session link"
	Text     string
	Page     string       // a session's browser page, if any
	Filename string       // a keyfile's name to save it as
	Download template.URL // a keyfile as a data: URL
}

// showOnce writes the page that shows a secret the edge keeps no copy of.
func (d *dashboard) showOnce(w http.ResponseWriter, r *http.Request, id string, data shownData) int {
	sess, _ := d.sessions.get(id)
	st := d.b.Status(r.Context())
	d.render(w, http.StatusCreated, "shown", view{Title: "New " + data.What, CSRF: sess.csrf, Edge: st.EdgeID, Fenced: st.Fenced, Data: data})
	return http.StatusCreated
}

// createKeyfile makes an enrollment keyfile from the manage page's form
// and shows it, once.
func (d *dashboard) createKeyfile(w http.ResponseWriter, r *http.Request, id string) int {
	req := TokenRequest{Name: strings.TrimSpace(r.PostFormValue("name")), TTL: strings.TrimSpace(r.PostFormValue("ttl")),
		Services: strings.FieldsFunc(r.PostFormValue("services"), func(c rune) bool { return c == ',' || c == ' ' }),
		Replace:  r.PostFormValue("replace") != ""}
	ttl, err := parseTTL(req.TTL, time.Hour, "30m or 24h")
	if err != nil {
		return d.failed(w, r, id, "/ui/manage", err)
	}
	kf, err := createKeyfile(r, d.b, d.log, req, ttl)
	if err != nil {
		return d.failed(w, r, id, "/ui/manage", err)
	}
	return d.showOnce(w, r, id, shownData{What: "keyfile", Text: string(kf), Filename: req.Name + ".keyfile",
		Download: template.URL("data:application/json;base64," + base64.StdEncoding.EncodeToString(kf))})
}

// createSession makes a one-time session from the manage page's form and
// shows its link, once.
func (d *dashboard) createSession(w http.ResponseWriter, r *http.Request, id string) int {
	req := SessionRequest{Service: r.PostFormValue("service"), TTL: strings.TrimSpace(r.PostFormValue("ttl")),
		Connector: strings.TrimSpace(r.PostFormValue("connector"))}
	s, err := createSession(r.Context(), d.b, req)
	if err != nil {
		return d.failed(w, r, id, "/ui/manage", err)
	}
	return d.showOnce(w, r, id, shownData{What: "session link", Text: s.URL, Page: s.Page})
}

// grant grants or ungrants a service (op) to a connector.
func (d *dashboard) grant(w http.ResponseWriter, r *http.Request, id string) int {
	ref, service, on := r.PostFormValue("connector"), strings.TrimSpace(r.PostFormValue("service")), r.PostFormValue("op") == "grant"
	c, err := d.b.Grant(r.Context(), ref, service, on)
	if err != nil {
		return d.failed(w, r, id, "/ui/manage", err)
	}
	msg := fmt.Sprintf("Connector %s may now offer service %s.", c.Name, service)
	if !on {
		msg = fmt.Sprintf("Connector %s may no longer offer service %s.", c.Name, service)
	}
	return d.done(w, r, id, "/ui/manage", flash{Text: msg})
}

// revoke revokes a connector: its tunnels close at once.
func (d *dashboard) revoke(w http.ResponseWriter, r *http.Request, id string) int {
	c, err := d.b.RevokeConnector(r.Context(), r.PostFormValue("connector"))
	if err != nil {
		return d.failed(w, r, id, "/ui/", err)
	}
	return d.done(w, r, id, "/ui/", flash{Text: fmt.Sprintf("Connector %s (%s) is revoked: its tunnels are closed and it is refused from now on.", c.Name, c.ID)})
}

// humanBytes says n bytes in a unit a reader takes in at a glance.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// humanAge says a duration to the second, or coarser once it is long.
func humanAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// humanUntil says how long until t, or how long ago it passed.
func humanUntil(t time.Time) string {
	if d := time.Until(t); d > 0 {
		return "in " + humanAge(d)
	}
	return "expired " + humanAge(time.Since(t)) + " ago"
}
