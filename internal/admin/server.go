package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/sallyport/sallyport/internal/health"
	"github.com/sallyport/sallyport/internal/store"
)

type actorKey struct{}

// Actor names who makes the request whose context ctx is, for the audit
// trail: "admin via socket", or "admin via api from ADDR".
func Actor(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok {
		return a
	}
	return "admin"
}

// statusWriter remembers the status a handler wrote, and flushes.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
	w.ResponseWriter.WriteHeader(s)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// audited records each call to h in the audit trail, under the actor
// actor names for the request.
func audited(b Backend, h http.Handler, actor func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), actorKey{}, actor(r)))
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		b.Called(r.Context(), r.Method, r.URL.Path, sw.status)
	})
}

// SocketHandler returns the API's HTTP handler for the Unix socket in the
// edge's data directory, whose permissions are its authentication.
func SocketHandler(b Backend, log *slog.Logger) http.Handler {
	return withProbes(b, audited(b, routes(b, log), func(*http.Request) string { return "admin via socket" }))
}

// TokenHandler returns the API's HTTP handler for a TCP listener: requests
// without the bearer token are refused with 401 (and recorded), but for
// the probes and the dashboard under /ui/, which has its own login with
// the same token (a session cookie, never valid for the API).
func TokenHandler(b Backend, token string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", audited(b, requireToken(routes(b, log), token, log), func(r *http.Request) string { return "admin via api from " + r.RemoteAddr }))
	newDashboard(b, token, log).routes(mux)
	return withProbes(b, mux)
}

// withProbes serves the probes itself, unaudited and without a token,
// and everything else with api.
func withProbes(b Backend, api http.Handler) http.Handler {
	mux := http.NewServeMux()
	health.Routes(mux, b.Readiness)
	mux.Handle("/", api)
	return mux
}

// routes returns the API's routes, without authentication.
func routes(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		ttl, ok := decodeKeyfileRequest(w, r, "token", &req, func() string { return req.TTL })
		if !ok {
			return
		}
		kf, err := createKeyfile(r, b, log, req, ttl)
		if err != nil {
			writeError(w, err)
			return
		}
		writeKeyfile(w, kf)
	})
	mux.HandleFunc("POST /v1/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req JoinTokenRequest
		ttl, ok := decodeKeyfileRequest(w, r, "join token", &req, func() string { return req.TTL })
		if !ok {
			return
		}
		kf, err := b.CreateJoinKeyfile(r.Context(), req, ttl)
		if err != nil {
			writeError(w, err)
			return
		}
		log.Info("join token created", "role", req.Role, "ttl", ttl, "remote", r.RemoteAddr)
		writeKeyfile(w, kf)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Status(r.Context()))
	})
	mux.HandleFunc("GET /v1/connectors", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.Connectors(r.Context()))
	})
	mux.HandleFunc("PUT /v1/connectors/{ref}/grants/{service}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.Grant(r.Context(), r.PathValue("ref"), r.PathValue("service"), true))
	})
	mux.HandleFunc("DELETE /v1/connectors/{ref}/grants/{service}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.Grant(r.Context(), r.PathValue("ref"), r.PathValue("service"), false))
	})
	mux.HandleFunc("POST /v1/connectors/{ref}/revoke", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.RevokeConnector(r.Context(), r.PathValue("ref")))
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.Tokens(r.Context()))
	})
	mux.HandleFunc("POST /v1/tokens/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.RevokeToken(r.Context(), r.PathValue("id")))
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		serveAudit(w, r, b)
	})
	sessionRoutes(mux, b)
	reloadRoutes(mux, b)
	return mux
}

// decodeKeyfileRequest decodes a request for a keyfile (what names it)
// into req, strictly, and returns the TTL that ttl reads from it: 1h when
// not given. On a bad request it writes the error and returns false.
func decodeKeyfileRequest(w http.ResponseWriter, r *http.Request, what string, req any, ttl func() string) (time.Duration, bool) {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		writeError(w, &Error{http.StatusBadRequest, "bad " + what + " request: " + err.Error()})
		return 0, false
	}
	d, err := parseTTL(ttl(), time.Hour, "30m or 24h")
	if err != nil {
		writeError(w, err)
		return 0, false
	}
	return d, true
}

// parseTTL reads a request's TTL: def when s is empty, else a positive
// Go duration; the error names examples.
func parseTTL(s string, def time.Duration, examples string) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, &Error{http.StatusBadRequest, fmt.Sprintf("bad ttl %q: use a positive duration such as %s", s, examples)}
	}
	return d, nil
}

// createKeyfile makes an enrollment keyfile for r (the API's or the
// dashboard's request), and logs it.
func createKeyfile(r *http.Request, b Backend, log *slog.Logger, req TokenRequest, ttl time.Duration) ([]byte, error) {
	kf, err := b.CreateKeyfile(r.Context(), req, ttl)
	if err == nil {
		log.Info("enrollment token created", "name", req.Name, "ttl", ttl, "remote", r.RemoteAddr)
	}
	return kf, err
}

// writeKeyfile answers 201 with a keyfile.
func writeKeyfile(w http.ResponseWriter, kf []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write(kf)
}

// requireToken refuses requests to h without the bearer token with 401.
func requireToken(h http.Handler, token string, log *slog.Logger) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			log.Warn("admin request refused: missing or wrong bearer token", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeError(w, &Error{http.StatusUnauthorized, "missing or wrong bearer token: use the token in the edge's data directory (admin.token)"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// reply returns a function that writes a backend's result: v as JSON with
// status, or err.
func reply(w http.ResponseWriter, status int) func(v any, err error) {
	return func(v any, err error) {
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, status, v)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ae = &Error{http.StatusInternalServerError, err.Error()}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	json.NewEncoder(w).Encode(ae)
}

// serveAudit writes the audit trail as JSON lines, one event a line,
// flushed as they come when following. Query: since (RFC 3339), follow=1.
func serveAudit(w http.ResponseWriter, r *http.Request, b Backend) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, &Error{http.StatusBadRequest, fmt.Sprintf("bad since %q: use RFC 3339, such as 2026-11-25T10:00:00Z", v)})
			return
		}
		since = t
	}
	follow := r.URL.Query().Get("follow") == "1"
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	started := false
	if follow && flusher != nil {
		// The client waits for the reply's head before the first event.
		w.WriteHeader(http.StatusOK)
		flusher.Flush()
		started = true
	}
	err := b.ReadAudit(r.Context(), since, follow, func(ev store.AuditEvent) error {
		started = true
		if err := enc.Encode(ev); err != nil {
			return err
		}
		if follow && flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if err != nil && !started {
		writeError(w, err)
		return
	}
	if !started {
		w.WriteHeader(http.StatusOK)
	}
}
