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
	"context"
	"time"

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

// Error is an API error with its HTTP status; its message is for the user.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }
