package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// PutConnector implements Store.
func (s *JetStream) PutConnector(ctx context.Context, c Connector) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("put connector: %w", err)
	}
	if err := validateID("connector", c.ID); err != nil {
		return fmt.Errorf("put connector: %w", err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("put connector %s: %w", c.ID, err)
	}
	// A put of the same value is safe to make again: an unanswered one
	// (an election, the raise to R3) is, up to writeAttempts times. An
	// enrollment puts its connector after its token is consumed, so a
	// put given up on costs the connector its keyfile.
	err = retryUnanswered(ctx, func(actx context.Context) error {
		_, err := s.connectors.Put(actx, c.ID, b)
		return err
	})
	if err != nil {
		return fmt.Errorf("put connector %s: %w", c.ID, err)
	}
	return nil
}

// UpdateConnector implements Store.
func (s *JetStream) UpdateConnector(ctx context.Context, id string, fn func(*Connector) error) (Connector, error) {
	if err := s.check(); err != nil {
		return Connector{}, fmt.Errorf("update connector: %w", err)
	}
	if err := validateID("connector", id); err != nil {
		return Connector{}, fmt.Errorf("update connector: %w", err)
	}
	return update(ctx, s.connectors, "connector", id, fn)
}

// WatchConnectors implements Store.
func (s *JetStream) WatchConnectors(ctx context.Context, fn func(Connector)) (stop func(), err error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("watch connectors: %w", err)
	}
	return watch(ctx, s, s.connectors, "connector", &s.connectorsSeen, func(c *Connector, rev uint64) { c.Revision = rev }, fn)
}

// GetConnector implements Store.
func (s *JetStream) GetConnector(ctx context.Context, id string) (Connector, error) {
	if err := s.check(); err != nil {
		return Connector{}, fmt.Errorf("get connector: %w", err)
	}
	if err := validateID("connector", id); err != nil {
		return Connector{}, fmt.Errorf("get connector: %w", err)
	}
	var c Connector
	rev, err := get(ctx, s.connectors, id, &c)
	if err != nil {
		return Connector{}, fmt.Errorf("get connector %s: %w", id, err)
	}
	c.Revision = rev
	return c, nil
}

// ListConnectors implements Store.
func (s *JetStream) ListConnectors(ctx context.Context) ([]Connector, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list connectors: %w", err)
	}
	cs, err := list[Connector](ctx, s.connectors)
	if err != nil {
		return nil, fmt.Errorf("list connectors: %w", err)
	}
	slices.SortFunc(cs, func(a, b Connector) int { return strings.Compare(a.ID, b.ID) })
	return cs, nil
}

func (c *Connector) setRevision(rev uint64) { c.Revision = rev }
