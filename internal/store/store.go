// Package store holds the state that several edges must share — enrollment
// tokens and connector identities — behind a small interface, [Store], and
// implements it on NATS JetStream key-value buckets ([JetStream]).
//
// A single edge embeds its own NATS server (no port opened, data under the
// edge's data directory). A cluster of edges either makes their embedded
// servers members of one NATS cluster ([Options.Cluster]: routes with mutual
// TLS from the edge CA, buckets in three replicas once there are three
// servers), or points [Options.URL] at a shared NATS cluster. Either way the
// edge sees the same interface:
//
//	st, err := store.Open(ctx, store.Options{Dir: filepath.Join(dataDir, "nats"), Logger: log})
//	if err != nil {
//		return err
//	}
//	defer st.Close()
//
//	err = st.CreateToken(ctx, store.Token{ID: id, SecretHash: sum[:], Name: "site-a", ...})
//	tok, err := st.ConsumeToken(ctx, id, func(t store.Token) error {
//		if !t.UsedAt.IsZero() {
//			return errAlreadyUsed // the caller's own policy error, returned unchanged
//		}
//		return nil
//	}, connectorID, time.Now())
//
// One-time tokens are consumed by compare-and-swap on the key's revision,
// never by read-then-write, so of many edges or goroutines redeeming the same
// token at once exactly one succeeds.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrNotFound reports that no token or connector has the requested id.
	ErrNotFound = errors.New("store: not found")
	// ErrExists reports that a token with that id is already stored.
	ErrExists = errors.New("store: already exists")
	// ErrInvalidID reports an id that cannot be used as a key: ids are 1 to
	// 128 characters from A-Z, a-z, 0-9, '-' and '_'.
	ErrInvalidID = errors.New("store: invalid id")
	// ErrTokenUsed is returned by ConsumeToken when the caller's check
	// accepted a token that is already used. It is a backstop: a correct
	// check refuses used tokens itself, and its own error is returned.
	ErrTokenUsed = errors.New("store: token already used")
	// ErrClosed reports a call on a store after Close.
	ErrClosed = errors.New("store: closed")
)

// maxIDLen bounds ids; a certificate serial in hex is at most 40 characters.
const maxIDLen = 128

// Token is an enrollment token's stored state. Only a hash of the secret is
// stored. The zero value is not a valid token: ID and SecretHash are required.
type Token struct {
	ID         string    `json:"id"`          // public id, safe to log; the KV key
	SecretHash []byte    `json:"secret_hash"` // SHA-256 of the secret (32 bytes)
	Name       string    `json:"name"`        // connector name the token enrolls
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	UsedAt     time.Time `json:"used_at,omitzero"`  // zero while unused
	UsedBy     string    `json:"used_by,omitempty"` // id of the connector that redeemed it
	// Grants are the services the enrolled connector may offer from its
	// first tunnel; none grants nothing.
	Grants []string `json:"grants,omitempty"`
	// Replaces, if set, is the id of the connector of the same name that
	// redeeming this token revokes.
	Replaces  string    `json:"replaces,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"` // zero unless revoked before use
	// Kind says what redeeming the token does: TokenEnroll (empty, as
	// every token made before join tokens), TokenJoinEdge or
	// TokenJoinWitness. A redemption checks it, so that a token made for
	// one purpose never serves another.
	Kind string `json:"kind,omitempty"`
}

// Token kinds (Token.Kind).
const (
	// TokenEnroll enrolls a connector: it buys a client certificate.
	TokenEnroll = ""
	// TokenJoinEdge joins a new edge to the cluster: it buys the CA's
	// private key and a route certificate.
	TokenJoinEdge = "join-edge"
	// TokenJoinWitness joins a store-only witness: it buys a route
	// certificate and the CA certificate, never the CA key.
	TokenJoinWitness = "join-witness"
)

// Used reports whether the token has been redeemed.
func (t Token) Used() bool { return !t.UsedAt.IsZero() }

// Revoked reports whether the token was revoked.
func (t Token) Revoked() bool { return !t.RevokedAt.IsZero() }

// Connector is an enrolled connector's identity. The zero value is not valid:
// ID is required. A zero RevokedAt means the connector is not revoked.
type Connector struct {
	ID         string    `json:"id"` // the identity's id (pki.ConnectorID): its first certificate's hex serial; the KV key
	Name       string    `json:"name"`
	TokenID    string    `json:"token_id"`
	EnrolledAt time.Time `json:"enrolled_at"`
	NotAfter   time.Time `json:"not_after"` // its current certificate's expiry, moved by each renewal
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	// Grants are the services the connector may offer, sorted; none
	// grants nothing.
	Grants []string `json:"grants,omitempty"`
	// EnrollKey is the pin (pki.PinOf) of the key the connector enrolled
	// with: a connector that lost the edge's answer redeems its used token
	// again with the same key, and only with it.
	EnrollKey string `json:"enroll_key,omitempty"`
	// Revision is the store's revision of this record, set when it is
	// read, watched or updated: of two copies, the higher is newer.
	Revision uint64 `json:"-"`
}

// Revoked reports whether the connector has been revoked.
func (c Connector) Revoked() bool { return !c.RevokedAt.IsZero() }

// Store is the shared state of the edges. Implementations are safe for
// concurrent use by multiple goroutines, and by multiple edges sharing one
// backing store. Calls after Close fail with ErrClosed.
type Store interface {
	// CreateToken stores a new token. It returns ErrExists if the id is taken.
	CreateToken(ctx context.Context, t Token) error
	// GetToken returns the token with that id, or ErrNotFound.
	GetToken(ctx context.Context, id string) (Token, error)
	// ConsumeToken atomically marks token id as used by `by` at `at`. It
	// reads the token with its revision, calls check(t) (the caller's policy:
	// secret, expiry, already used...), and if check returns nil writes the
	// used state only if the revision is unchanged (compare-and-swap). On a
	// conflict it re-reads and calls check again, which then sees UsedAt set.
	// It returns the updated token, ErrNotFound, or check's error unchanged;
	// on any error the stored token is unchanged.
	ConsumeToken(ctx context.Context, id string, check func(Token) error, by string, at time.Time) (Token, error)
	// ListTokens returns every stored token, ordered by id.
	ListTokens(ctx context.Context) ([]Token, error)
	// PruneTokens removes the tokens that were finished before `before`:
	// used before it, or expired before it unused. It returns how many it
	// removed. A token it removes can no longer be redeemed anyway.
	PruneTokens(ctx context.Context, before time.Time) (int, error)
	// UpdateToken changes token id with fn by compare-and-swap: it reads
	// the token, calls fn on a copy, and writes the copy only if the token
	// is unchanged since, else reads again. It returns the token as
	// written, ErrNotFound, or fn's error unchanged (nothing written).
	UpdateToken(ctx context.Context, id string, fn func(*Token) error) (Token, error)
	// PutConnector stores c, replacing any connector with the same id.
	PutConnector(ctx context.Context, c Connector) error
	// UpdateConnector changes connector id with fn by compare-and-swap, as
	// UpdateToken does.
	UpdateConnector(ctx context.Context, id string, fn func(*Connector) error) (Connector, error)
	// WatchConnectors calls fn with every stored connector, then returns;
	// after that it calls fn with each connector as it is stored, from one
	// goroutine and in order, until ctx ends or stop is called. stop waits
	// for that goroutine to end.
	WatchConnectors(ctx context.Context, fn func(Connector)) (stop func(), err error)
	// GetConnector returns the connector with that id, or ErrNotFound.
	GetConnector(ctx context.Context, id string) (Connector, error)
	// ListConnectors returns every stored connector, ordered by id.
	ListConnectors(ctx context.Context) ([]Connector, error)
	// Sessions keeps the one-time client sessions.
	Sessions
	// Presence keeps the set of live edges.
	Presence
	// Audit appends an event to the audit trail.
	Audit(ctx context.Context, ev AuditEvent) error
	// ReadAudit calls fn with each audit event from since on, oldest
	// first; with follow it waits for new ones until ctx ends.
	ReadAudit(ctx context.Context, since time.Time, follow bool, fn func(AuditEvent) error) error
	// Close releases the store. It is idempotent and waits until everything
	// the store started has stopped.
	Close() error
}

// validateID reports whether id can be used as a key, naming what as kind.
func validateID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s id is empty", ErrInvalidID, kind)
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("%w: %s id is %d bytes long, the limit is %d", ErrInvalidID, kind, len(id), maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("%w: %s id %q has %q at byte %d; use only letters, digits, '-' and '_'",
				ErrInvalidID, kind, id, c, i)
		}
	}
	return nil
}
