// Package admin serves the edge's administration API over HTTP and is its
// client: the `sallyport token`, `status` and other administration commands
// call the running edge through it.
//
// Every request needs the bearer token that the edge keeps in its data
// directory (file admin.token, mode 0600). The API listens on loopback
// unless the operator says otherwise.
//
//	POST /v1/tokens   {"name":"site-a","ttl":"1h"} → 201 and a keyfile (JSON)
//	GET  /v1/status   → the edge's id, its services and its connectors
package admin

import (
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
	"strings"
	"time"
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
	ID        string    `json:"id"`
	Name      string    `json:"name"`
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
}

// ServiceStatus is one exposed service.
type ServiceStatus struct {
	Name    string `json:"name"`
	Listen  string `json:"listen"`
	Tunnels int    `json:"tunnels"` // tunnels currently offering it
}

// ConnectorStatus is one live tunnel.
type ConnectorStatus struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Remote   string    `json:"remote"`
	Since    time.Time `json:"since"`
	Services []string  `json:"services"`
	Streams  int       `json:"streams"`
}

// Backend is what the edge provides to the API.
type Backend interface {
	// CreateKeyfile makes a one-time token valid for ttl and returns the
	// keyfile's bytes.
	CreateKeyfile(ctx context.Context, req TokenRequest, ttl time.Duration) ([]byte, error)
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
}

// Error is an API error with its HTTP status; its message is for the user.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// Handler returns the API's HTTP handler, without authentication: serve it
// on the Unix socket in the edge's data directory, whose permissions are
// the authentication, or wrap it in RequireToken.
func Handler(b Backend, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, &Error{http.StatusBadRequest, "bad token request: " + err.Error()})
			return
		}
		ttl := time.Hour
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d <= 0 {
				writeError(w, &Error{http.StatusBadRequest, fmt.Sprintf("bad ttl %q: use a positive duration such as 30m or 24h", req.TTL)})
				return
			}
			ttl = d
		}
		kf, err := b.CreateKeyfile(r.Context(), req, ttl)
		if err != nil {
			writeError(w, err)
			return
		}
		log.Info("enrollment token created", "name", req.Name, "ttl", ttl, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(kf)
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
	return mux
}

// RequireToken refuses requests to h without the bearer token with 401.
func RequireToken(h http.Handler, token string, log *slog.Logger) http.Handler {
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
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	where, host := c.Addr, c.Addr
	if c.Socket != "" {
		where, host = c.Socket, "edge"
		hc = &http.Client{Timeout: hc.Timeout, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return DialSocket(ctx, c.Socket) },
		}}
	}
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+host+path, rd)
	if err != nil {
		return nil, err
	}
	if c.Socket == "" {
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
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("read admin API reply: %w", err)
	}
	if resp.StatusCode != want {
		var ae Error
		if json.Unmarshal(b, &ae) == nil && ae.Message != "" {
			return nil, fmt.Errorf("edge admin API: %s", ae.Message)
		}
		return nil, fmt.Errorf("edge admin API: %s", resp.Status)
	}
	return b, nil
}
