package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// DefaultSessionTTL is a session's lifetime when a request names none.
const DefaultSessionTTL = 5 * time.Minute

// SessionRequest asks for a one-time session: POST /v1/sessions.
type SessionRequest struct {
	Service string `json:"service"`
	TTL     string `json:"ttl,omitempty"` // a Go duration; default 5m
	// Connector, if set, is the name of the connector that must carry
	// the session; empty means any connector that offers the service.
	Connector string `json:"connector,omitempty"`
}

// Session is a one-time session. URL, Token and Subprotocol are set only
// in the reply that creates it: the edge keeps a hash of the token alone.
type Session struct {
	ID        string `json:"id"`
	Service   string `json:"service"`
	Connector string `json:"connector,omitempty"`
	// Host is an HTTP session's host: its cookie admits requests there.
	Host  string `json:"host,omitempty"`
	State string `json:"state"` // unused, used, expired or revoked
	// URL is the link to hand over: wss://EDGE_HOST/s/<token>, or for a
	// service published by Host, https://HOST/.sallyport/s/<token>
	// (http:// if the edge has no https listener).
	URL string `json:"url,omitempty"`
	// Token is the link's token, for clients that present it in the
	// Sec-WebSocket-Protocol header as Subprotocol, at /s/ alone
	// (WebSocket sessions only; an HTTP session has no Subprotocol).
	Token       string `json:"token,omitempty"`
	Subprotocol string `json:"subprotocol,omitempty"`
	// Page is a link to the edge's browser page for the session,
	// https://EDGE_HOST/.sallyport/view#<token>: it shows what the
	// service sends, as lines of text, and uses the session only when
	// the page opens its WebSocket.
	Page      string    `json:"page,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
	UsedBy    string    `json:"used_by,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// SessionBackend is what the edge provides to the API for sessions.
type SessionBackend interface {
	// CreateSession makes a one-time session valid for ttl.
	CreateSession(ctx context.Context, req SessionRequest, ttl time.Duration) (Session, error)
	// Sessions lists the sessions, newest first.
	Sessions(ctx context.Context) ([]Session, error)
	// RevokeSession makes an unused session useless, or ends a used
	// HTTP session.
	RevokeSession(ctx context.Context, id string) (Session, error)
}

// sessionRoutes adds the session calls to mux.
func sessionRoutes(mux *http.ServeMux, b SessionBackend) {
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var req SessionRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, &Error{http.StatusBadRequest, "bad session request: " + err.Error()})
			return
		}
		if req.Service == "" {
			writeError(w, &Error{http.StatusBadRequest, `bad session request: name the service, e.g. {"service":"logs"}`})
			return
		}
		reply(w, http.StatusCreated)(createSession(r.Context(), b, req))
	})
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.Sessions(r.Context()))
	})
	mux.HandleFunc("POST /v1/sessions/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.RevokeSession(r.Context(), r.PathValue("id")))
	})
}

// createSession makes the session req asks for (its TTL by default
// DefaultSessionTTL), for the API or the dashboard.
func createSession(ctx context.Context, b SessionBackend, req SessionRequest) (Session, error) {
	ttl, err := parseTTL(req.TTL, DefaultSessionTTL, "30s or 5m")
	if err != nil {
		return Session{}, err
	}
	return b.CreateSession(ctx, req, ttl)
}

// CreateSession asks the edge for a one-time session.
func (c *Client) CreateSession(ctx context.Context, req SessionRequest) (Session, error) {
	body, _ := json.Marshal(req)
	var s Session
	b, err := c.do(ctx, http.MethodPost, "/v1/sessions", body, http.StatusCreated)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("read admin API reply: %w", err)
	}
	return s, nil
}

// Sessions lists the sessions.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	return call[[]Session](ctx, c, http.MethodGet, "/v1/sessions")
}

// RevokeSession revokes session id.
func (c *Client) RevokeSession(ctx context.Context, id string) (Session, error) {
	return call[Session](ctx, c, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/revoke")
}
