package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Session is a one-time client session's stored state: a link to one
// service that the first client to present its token may use. Only a hash
// of the token's secret is stored. The zero value is not valid: ID,
// SecretHash and Service are required.
type Session struct {
	ID         string `json:"id"`          // public id, safe to log; the KV key
	SecretHash []byte `json:"secret_hash"` // SHA-256 of the secret (32 bytes)
	Service    string `json:"service"`
	// Connector, if set, is the name of the connector whose tunnels carry
	// the session; empty means any that offers the service.
	Connector string    `json:"connector,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"` // the admin actor
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`  // zero while unused
	UsedBy    string    `json:"used_by,omitempty"` // the client's address, and the edge that carried it
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// Host, if set, makes the session an HTTP one: its link is
	// https://Host/.sallyport/s/<token> on a host of the service, and its
	// use sets a cookie that admits requests to that host alone until
	// ExpiresAt. Empty: a WebSocket session (/s/<token> on an edge host).
	Host string `json:"host,omitempty"`
	// CookieHash is the SHA-256 of the secret of the cookie that the
	// session's use set (an HTTP session's, once used); never the
	// link's secret.
	CookieHash []byte `json:"cookie_hash,omitempty"`
}

// Used reports whether the session has been redeemed.
func (s Session) Used() bool { return !s.UsedAt.IsZero() }

// Revoked reports whether the session was revoked.
func (s Session) Revoked() bool { return !s.RevokedAt.IsZero() }

// Sessions is the part of the store that keeps client sessions; JetStream
// implements it beside Store. The same rules hold: one-time use goes
// through UpdateSession, a compare-and-swap.
type Sessions interface {
	// CreateSession stores a new session; ErrExists if the id is taken.
	CreateSession(ctx context.Context, s Session) error
	// GetSession returns the session with that id, or ErrNotFound.
	GetSession(ctx context.Context, id string) (Session, error)
	// UpdateSession changes session id with fn by compare-and-swap, as
	// UpdateToken does: fn sees the latest value, and its error is
	// returned unchanged with nothing written.
	UpdateSession(ctx context.Context, id string, fn func(*Session) error) (Session, error)
	// ListSessions returns every stored session, ordered by id.
	ListSessions(ctx context.Context) ([]Session, error)
	// WatchSessions calls fn with every stored session, then returns;
	// until stop is called (or ctx ends) it calls fn, from one goroutine,
	// with each session written (created, used, revoked). Pruned
	// sessions are not delivered: they ended long before.
	WatchSessions(ctx context.Context, fn func(Session)) (stop func(), err error)
	// PruneSessions removes the sessions finished before `before` (used,
	// revoked or expired) and returns how many it removed.
	PruneSessions(ctx context.Context, before time.Time) (int, error)
}

var _ Sessions = (*JetStream)(nil)

// CreateSession implements Sessions.
func (s *JetStream) CreateSession(ctx context.Context, se Session) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	if err := validateID("session", se.ID); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	if len(se.SecretHash) != 32 {
		return fmt.Errorf("create session %s: secret hash is %d bytes; store the SHA-256 of the secret (32 bytes), never the secret", se.ID, len(se.SecretHash))
	}
	if se.Service == "" {
		return fmt.Errorf("create session %s: no service", se.ID)
	}
	return create(ctx, s.sessions, "session", se.ID, se)
}

// GetSession implements Sessions.
func (s *JetStream) GetSession(ctx context.Context, id string) (Session, error) {
	if err := s.check(); err != nil {
		return Session{}, fmt.Errorf("get session: %w", err)
	}
	if err := validateID("session", id); err != nil {
		return Session{}, fmt.Errorf("get session: %w", err)
	}
	var se Session
	if _, err := get(ctx, s.sessions, id, &se); err != nil {
		return Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return se, nil
}

// UpdateSession implements Sessions.
func (s *JetStream) UpdateSession(ctx context.Context, id string, fn func(*Session) error) (Session, error) {
	if err := s.check(); err != nil {
		return Session{}, fmt.Errorf("update session: %w", err)
	}
	if err := validateID("session", id); err != nil {
		return Session{}, fmt.Errorf("update session: %w", err)
	}
	return update(ctx, s.sessions, "session", id, fn)
}

// ListSessions implements Sessions.
func (s *JetStream) ListSessions(ctx context.Context) ([]Session, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	ss, err := list[Session](ctx, s.sessions)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	slices.SortFunc(ss, func(a, b Session) int { return strings.Compare(a.ID, b.ID) })
	return ss, nil
}

// WatchSessions implements Sessions.
func (s *JetStream) WatchSessions(ctx context.Context, fn func(Session)) (stop func(), err error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("watch sessions: %w", err)
	}
	return watch(ctx, s, s.sessions, "session", nil, nil, fn)
}

// PruneSessions implements Sessions.
func (s *JetStream) PruneSessions(ctx context.Context, before time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, fmt.Errorf("prune sessions: %w", err)
	}
	return prune(ctx, s.sessions, "session", before, func(se Session) string { return se.ID }, func(se Session) time.Time {
		switch {
		case se.Used():
			return se.UsedAt
		case se.Revoked():
			return se.RevokedAt
		}
		return se.ExpiresAt
	})
}
