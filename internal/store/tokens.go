package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// CreateToken implements Store.
func (s *JetStream) CreateToken(ctx context.Context, t Token) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	if err := validateID("token", t.ID); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	if len(t.SecretHash) != 32 {
		return fmt.Errorf("create token %s: secret hash is %d bytes; store the SHA-256 of the secret (32 bytes), never the secret", t.ID, len(t.SecretHash))
	}
	return create(ctx, s.tokens, "token", t.ID, t)
}

// GetToken implements Store.
func (s *JetStream) GetToken(ctx context.Context, id string) (Token, error) {
	t, _, err := s.getToken(ctx, id)
	if err != nil {
		return Token{}, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// getToken reads token id and its revision. Errors name the token only.
func (s *JetStream) getToken(ctx context.Context, id string) (Token, uint64, error) {
	if err := s.check(); err != nil {
		return Token{}, 0, err
	}
	if err := validateID("token", id); err != nil {
		return Token{}, 0, err
	}
	var t Token
	rev, err := get(ctx, s.tokens, id, &t)
	if err != nil {
		return Token{}, 0, fmt.Errorf("token %s: %w", id, err)
	}
	return t, rev, nil
}

// ConsumeToken implements Store.
func (s *JetStream) ConsumeToken(ctx context.Context, id string, check func(Token) error, by string, at time.Time) (Token, error) {
	if check == nil {
		return Token{}, errors.New("consume token: check is nil; pass the redemption policy")
	}
	if by == "" || at.IsZero() {
		return Token{}, errors.New("consume token: the redeeming connector id and the time are required")
	}
	t, err := s.UpdateToken(ctx, id, func(t *Token) error {
		if err := check(*t); err != nil {
			return err
		}
		if t.Used() {
			return fmt.Errorf("consume token %s: %w by %s at %s", id, ErrTokenUsed, t.UsedBy, t.UsedAt.Format(time.RFC3339))
		}
		t.UsedAt, t.UsedBy = at, by
		return nil
	})
	var ok *updateError
	if errors.As(err, &ok) {
		return Token{}, fmt.Errorf("consume token: %w", err)
	}
	return t, err
}

// UpdateToken implements Store.
func (s *JetStream) UpdateToken(ctx context.Context, id string, fn func(*Token) error) (Token, error) {
	if err := s.check(); err != nil {
		return Token{}, fmt.Errorf("update token: %w", err)
	}
	if err := validateID("token", id); err != nil {
		return Token{}, fmt.Errorf("update token: %w", err)
	}
	return update(ctx, s.tokens, "token", id, fn)
}

// PruneTokens implements Store.
func (s *JetStream) PruneTokens(ctx context.Context, before time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, fmt.Errorf("prune tokens: %w", err)
	}
	return prune(ctx, s.tokens, "token", before, func(t Token) string { return t.ID }, func(t Token) time.Time {
		if t.Used() {
			return t.UsedAt
		}
		return t.ExpiresAt
	})
}

// ListTokens implements Store.
func (s *JetStream) ListTokens(ctx context.Context) ([]Token, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	ts, err := list[Token](ctx, s.tokens)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	slices.SortFunc(ts, func(a, b Token) int { return strings.Compare(a.ID, b.ID) })
	return ts, nil
}
