// Package admin serves the edge's administration API over HTTP and is its
// client: the `sallyport token`, `status` and other administration commands
// call the running edge through it.
//
// Every request needs the bearer token that the edge keeps in its data
// directory (file admin.token, mode 0600). The API listens on loopback
// unless the operator says otherwise.
//
//	POST /v1/tokens   {"name":"site-a","ttl":"1h"} → 201 and a keyfile (JSON)
//	POST /v1/join-tokens {"role":"edge","ttl":"1h"} → 201 and a join keyfile
//	GET  /v1/status   → the edge's id, its services and its connectors
//	POST /v1/sessions {"service":"logs","ttl":"5m"} → 201 and a one-time link
//	POST /v1/reload   → the edge reads its config again: what changed, or 422 and why not
//
// On the TCP listener, /ui/ serves a dashboard for browsers (dashboard.go).
//
// The probes GET /livez and GET /readyz need no token and are not
// audited (a balancer asks them every few seconds): they say "ok" or a
// short reason, nothing else.
package admin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/sallyport/sallyport/internal/health"
	"github.com/sallyport/sallyport/internal/store"
)

// TokenRequest asks for an enrollment keyfile.
type TokenRequest struct {
	Name  string   `json:"name"`
	TTL   string   `json:"ttl,omitempty"`   // a Go duration; default 1h
	Edges []string `json:"edges,omitempty"` // overrides the edge's advertised addresses
	// Services are granted to the connector from its first tunnel.
	Services []string `json:"services,omitempty"`
	// Replace allows a name that is enrolled already: redeeming the new
	// keyfile revokes the connector enrolled under it.
	Replace bool `json:"replace,omitempty"`
}

// JoinTokenRequest asks for a join keyfile, for a new edge or witness of
// the cluster.
type JoinTokenRequest struct {
	// Role is "edge" (the default) or "witness".
	Role  string   `json:"role,omitempty"`
	TTL   string   `json:"ttl,omitempty"`   // a Go duration; default 1h, at most 24h
	Edges []string `json:"edges,omitempty"` // overrides the edge's advertised host:port addresses
}

// Connector is an enrolled connector, as GET /v1/connectors lists it.
type Connector struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Grants     []string  `json:"grants"`
	Tunnels    int       `json:"tunnels"`            // live tunnels to this edge
	LastSeen   time.Time `json:"last_seen,omitzero"` // a tunnel up now, or when the last one ended; zero: never on this edge
	EnrolledAt time.Time `json:"enrolled_at"`
	NotAfter   time.Time `json:"not_after"` // its certificate's expiry
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

// Token is an enrollment token, as GET /v1/tokens lists it; never its
// secret, which the edge does not keep.
type Token struct {
	ID   string `json:"id"`
	Name string `json:"name"` // the connector's; empty for a join token
	// Kind is "enroll" (a connector's), "join-edge" or "join-witness".
	Kind      string    `json:"kind"`
	Grants    []string  `json:"grants,omitempty"`
	State     string    `json:"state"` // unused, used, expired or revoked
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
	UsedBy    string    `json:"used_by,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Status is what GET /v1/status returns.
type Status struct {
	EdgeID     string            `json:"edge_id"`
	Tunnel     string            `json:"tunnel"`
	Advertise  []string          `json:"advertise"`
	Services   []ServiceStatus   `json:"services"`
	Connectors []ConnectorStatus `json:"connectors"`
	// Refusals counts the clients the edge turned away since it started,
	// by reason (such as "not_http", "unrouted_sni", "rate_limited").
	Refusals map[string]int64 `json:"refusals,omitempty"`
	// Store is the edge's store as a cluster member; nil for a single
	// node.
	Store *StoreStatus `json:"store,omitempty"`
	// Fenced is set while the edge cannot reach its shared store: it then
	// serves nothing (docs/cluster.md §5).
	Fenced bool `json:"fenced,omitempty"`
	// Cluster is the edge set the edge tells its connectors: itself
	// first, then every other live edge.
	Cluster []ClusterEdge `json:"cluster,omitempty"`
}

// StoreStatus is what an edge whose store is a cluster member (or on an
// external NATS) knows of the cluster.
type StoreStatus struct {
	// Leader is the JetStream meta leader's server name; empty while the
	// cluster has no quorum (nothing can be written).
	Leader string `json:"leader"`
	// Servers is how many JetStream servers the cluster has had; Online,
	// how many of them were seen recently.
	Servers int `json:"servers"`
	Online  int `json:"online"`
}

// ClusterEdge is one tunnel address of an edge of the cluster.
type ClusterEdge struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// ServiceStatus is one exposed service.
type ServiceStatus struct {
	Name    string `json:"name"`
	Listen  string `json:"listen"`
	Tunnels int    `json:"tunnels"` // tunnels currently offering it
	// Hosts and SNI are its other ways in: the HTTP host names that
	// http and https listeners route to it, the TLS server names that
	// tls listeners pass through to it.
	Hosts []string `json:"hosts,omitempty"`
	SNI   []string `json:"sni,omitempty"`
	// Policy is who may reach it; the zero value lets every client in.
	Policy PolicyStatus `json:"policy,omitzero"`
}

// PolicyStatus is a service's policy, as the config says it.
type PolicyStatus struct {
	Allow          []string `json:"allow,omitempty"`
	Deny           []string `json:"deny,omitempty"`
	ClientCA       bool     `json:"client_ca,omitempty"` // a client certificate is required
	RequireSession bool     `json:"require_session,omitempty"`
	MaxConnections int      `json:"max_connections,omitempty"`
	// Rate is the limit on new connections, such as "10 per 1s, bursts
	// of 20"; empty for none.
	Rate string `json:"rate,omitempty"`
}

// LiveConn is a client connection the edge carries now.
type LiveConn struct {
	Service   string    `json:"service"`
	Connector string    `json:"connector"` // its name; its id if the name is not known
	Client    string    `json:"client"`    // the client's address
	Via       string    `json:"via"`       // the listener kind: tcp, http, https, tls, socks5, "+ws" for WebSocket access
	Since     time.Time `json:"since"`
	BytesIn   int64     `json:"bytes_in"`  // from the client to the service, so far
	BytesOut  int64     `json:"bytes_out"` // from the service to the client, so far
}

// Refusal is a client the edge turned away.
type Refusal struct {
	Time    time.Time `json:"time"`
	Reason  string    `json:"reason"` // such as "not_http", "policy_network"
	Service string    `json:"service,omitempty"`
	Client  string    `json:"client,omitempty"`
	Via     string    `json:"via,omitempty"`
	Message string    `json:"message"`
}

// ConnectorStatus is one live tunnel.
type ConnectorStatus struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Remote string `json:"remote"`
	// Transport is how the tunnel came: tcp (the tunnel port) or
	// websocket (an https listener's /.sallyport/tunnel).
	Transport string    `json:"transport"`
	Since     time.Time `json:"since"`
	Services  []string  `json:"services"`
	Streams   int       `json:"streams"`
}

// Backend is what the edge provides to the API.
type Backend interface {
	// CreateKeyfile makes a one-time token valid for ttl and returns the
	// keyfile's bytes.
	CreateKeyfile(ctx context.Context, req TokenRequest, ttl time.Duration) ([]byte, error)
	// CreateJoinKeyfile makes a one-time join token valid for ttl and
	// returns the join keyfile's bytes.
	CreateJoinKeyfile(ctx context.Context, req JoinTokenRequest, ttl time.Duration) ([]byte, error)
	Status(ctx context.Context) Status
	// Connectors lists the enrolled connectors, by name.
	Connectors(ctx context.Context) ([]Connector, error)
	// Grant lets the connector named by ref (its name or id) offer
	// service, or no longer when grant is false.
	Grant(ctx context.Context, ref, service string, grant bool) (Connector, error)
	// RevokeConnector revokes the connector named by ref.
	RevokeConnector(ctx context.Context, ref string) (Connector, error)
	// Tokens lists the enrollment tokens, newest first.
	Tokens(ctx context.Context) ([]Token, error)
	// RevokeToken makes an unused token useless.
	RevokeToken(ctx context.Context, id string) (Token, error)
	// ReadAudit calls fn with the audit events from since on; with follow
	// it waits for new ones until ctx ends.
	ReadAudit(ctx context.Context, since time.Time, follow bool, fn func(store.AuditEvent) error) error
	// Readiness is nil when the edge is ready for clients, or else the
	// reason it is not, which the unauthenticated /readyz shows.
	Readiness() error
	// Called records an admin call in the audit trail.
	Called(ctx context.Context, method, path string, status int)
	// Live lists the client connections the edge carries now, oldest
	// first.
	Live() []LiveConn
	// RecentRefusals lists the last clients the edge turned away, newest
	// first.
	RecentRefusals() []Refusal
	SessionBackend
	ReloadBackend
}

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

// Error is an API error with its HTTP status; its message is for the user.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

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

// Client calls a running edge's admin API: over the Unix socket in its
// data directory (Socket), or over TCP with the bearer token (Addr, Token).
type Client struct {
	// Socket is the path of the edge's admin socket; when set, Addr and
	// Token are not used, and the client talks only to a socket that
	// CheckSocket accepts, served by a process of the socket's owner.
	Socket string
	// Addr is the API's host:port.
	Addr string
	// Token is the bearer token.
	Token string
	// HTTP is the client to use; nil means a client with a 30s timeout.
	HTTP *http.Client
}

// CreateKeyfile asks the edge for an enrollment keyfile.
func (c *Client) CreateKeyfile(ctx context.Context, req TokenRequest) ([]byte, error) {
	body, _ := json.Marshal(req)
	return c.do(ctx, http.MethodPost, "/v1/tokens", body, http.StatusCreated)
}

// CreateJoinKeyfile asks the edge for a join keyfile.
func (c *Client) CreateJoinKeyfile(ctx context.Context, req JoinTokenRequest) ([]byte, error) {
	body, _ := json.Marshal(req)
	return c.do(ctx, http.MethodPost, "/v1/join-tokens", body, http.StatusCreated)
}

// Audit reads the audit trail from since on (all of it if zero), calling
// fn with each event; with follow it waits for new ones until ctx ends.
func (c *Client) Audit(ctx context.Context, since time.Time, follow bool, fn func(store.AuditEvent) error) error {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if follow {
		q.Set("follow", "1")
	}
	body, err := c.stream(ctx, "/v1/audit?"+q.Encode())
	if err != nil {
		return err
	}
	defer body.Close()
	dec := json.NewDecoder(body)
	for {
		var ev store.AuditEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read the audit trail: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Connectors lists the enrolled connectors.
func (c *Client) Connectors(ctx context.Context) ([]Connector, error) {
	return call[[]Connector](ctx, c, http.MethodGet, "/v1/connectors")
}

// Grant lets connector ref (name or id) offer service, or no longer.
func (c *Client) Grant(ctx context.Context, ref, service string, grant bool) (Connector, error) {
	method := http.MethodPut
	if !grant {
		method = http.MethodDelete
	}
	return call[Connector](ctx, c, method, "/v1/connectors/"+url.PathEscape(ref)+"/grants/"+url.PathEscape(service))
}

// RevokeConnector revokes connector ref (name or id).
func (c *Client) RevokeConnector(ctx context.Context, ref string) (Connector, error) {
	return call[Connector](ctx, c, http.MethodPost, "/v1/connectors/"+url.PathEscape(ref)+"/revoke")
}

// Tokens lists the enrollment tokens.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	return call[[]Token](ctx, c, http.MethodGet, "/v1/tokens")
}

// RevokeToken revokes token id.
func (c *Client) RevokeToken(ctx context.Context, id string) (Token, error) {
	return call[Token](ctx, c, http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/revoke")
}

// call makes a request without a body and decodes the JSON reply.
func call[T any](ctx context.Context, c *Client, method, path string) (T, error) {
	var v T
	b, err := c.do(ctx, method, path, nil, http.StatusOK)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("read admin API reply: %w", err)
	}
	return v, nil
}

// Status fetches the edge's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	b, err := c.do(ctx, http.MethodGet, "/v1/status", nil, http.StatusOK)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	resp, err := c.request(ctx, method, path, body, 30*time.Second)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read admin API reply: %w", err)
	}
	if resp.StatusCode != want {
		return nil, replyError(resp, b)
	}
	return b, nil
}

// stream makes a GET request whose reply may last (no timeout but ctx's)
// and returns its body, which the caller closes.
func (c *Client) stream(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.request(ctx, http.MethodGet, path, nil, 0)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, replyError(resp, b)
	}
	return resp.Body, nil
}

// replyError is the error for an unexpected reply with body b.
func replyError(resp *http.Response, b []byte) error {
	var ae Error
	if json.Unmarshal(b, &ae) == nil && ae.Message != "" {
		return fmt.Errorf("edge admin API: %s", ae.Message)
	}
	return fmt.Errorf("edge admin API: %s", resp.Status)
}

// request sends a request over the socket or TCP; timeout 0 means none
// but ctx's (c.HTTP's own timeout, if set, still applies over TCP).
func (c *Client) request(ctx context.Context, method, path string, body []byte, timeout time.Duration) (*http.Response, error) {
	hc, host := c.httpClient(timeout)
	where := c.Addr
	if c.Socket != "" {
		where = c.Socket
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+host+path, rd)
	if err != nil {
		return nil, err
	}
	if c.Socket == "" && c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		var se *SocketError
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, fmt.Errorf("reach the edge's admin API at %s (is the edge running? is --admin right?): %w", where, err)
	}
	return resp, nil
}

// httpClient returns the HTTP client that reaches the API, over the
// socket or TCP, and the host to put in URLs.
func (c *Client) httpClient(timeout time.Duration) (*http.Client, string) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: timeout}
	}
	if c.Socket == "" {
		return hc, c.Addr
	}
	return &http.Client{Timeout: hc.Timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return DialSocket(ctx, c.Socket) },
	}}, "edge"
}

// Probe asks the edge's probe at path (health.LivePath or
// health.ReadyPath): nil when it answers ok, else the reason.
func (c *Client) Probe(ctx context.Context, path string) error {
	hc, host := c.httpClient(0)
	return health.Probe(ctx, hc, "http://"+host+path, 0)
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
