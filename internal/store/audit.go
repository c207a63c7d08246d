package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The audit trail's JetStream stream and its one subject.
const (
	StreamAudit  = "sallyport_audit"
	subjectAudit = "sallyport.audit"
)

// DefaultAuditRetention is how long audit events are kept when
// Options.AuditRetention is zero.
const DefaultAuditRetention = 90 * 24 * time.Hour

// maxAuditEvent bounds one event's encoded size.
const maxAuditEvent = 8 << 10

// AuditEvent is one entry of the audit trail: who did what to what, when,
// and how it ended.
type AuditEvent struct {
	Time    time.Time `json:"time"`
	Edge    string    `json:"edge"`              // the edge that recorded it
	Actor   string    `json:"actor"`             // "admin via socket", "admin via api from ADDR", "connector ID", "edge"
	Action  string    `json:"action"`            // enroll, hello, grant, ungrant, revoke, token.create, token.revoke, admin.call
	Subject string    `json:"subject,omitempty"` // a connector (name id), a token id, a service
	Result  string    `json:"result"`            // "ok" or "refused: why"
	Detail  string    `json:"detail,omitempty"`
	// Seq is the event's position in the trail, set when it is read.
	Seq uint64 `json:"seq,omitempty"`
}

// openAudit binds (creating when missing) the audit stream, keeping events
// for retention; an existing stream's retention is brought to it.
func (s *JetStream) openAudit(ctx context.Context, js jetstream.JetStream, retention time.Duration, replicas int) error {
	if retention <= 0 {
		retention = DefaultAuditRetention
	}
	cfg := jetstream.StreamConfig{
		Name:        StreamAudit,
		Description: "sallyport audit trail: enrollments, grants, revocations, renewals, refused hellos, admin calls",
		Subjects:    []string{subjectAudit},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      retention,
		MaxMsgSize:  maxAuditEvent,
		Discard:     jetstream.DiscardOld,
	}
	st, err := js.Stream(ctx, StreamAudit)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		st, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(ctx, StreamAudit) // another edge created it first
		}
	case err == nil && st.CachedInfo().Config.MaxAge != retention:
		have := st.CachedInfo().Config // its replicas are the raiser's
		have.MaxAge = retention
		st, err = js.UpdateStream(ctx, have)
	}
	if err != nil {
		return fmt.Errorf("open store: audit stream %s: %w", StreamAudit, err)
	}
	s.js, s.audit = js, st
	return nil
}

// Audit appends ev to the audit trail (Time is set to now if zero).
func (s *JetStream) Audit(ctx context.Context, ev AuditEvent) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time, ev.Seq = ev.Time.UTC(), 0
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if len(b) > maxAuditEvent {
		ev.Detail = ev.Detail[:min(len(ev.Detail), 1024)] + "…"
		if b, err = json.Marshal(ev); err != nil || len(b) > maxAuditEvent {
			return fmt.Errorf("audit: event of %d bytes is too large", len(b))
		}
	}
	if _, err := s.js.Publish(ctx, subjectAudit, b); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// ReadAudit calls fn with each audit event recorded at or after since
// (every kept event if since is zero), oldest first. Without follow it
// returns once it has read what was there when it began; with follow it
// goes on with new events until ctx ends (and then returns nil). fn's
// error ends the read and is returned.
func (s *JetStream) ReadAudit(ctx context.Context, since time.Time, follow bool, fn func(AuditEvent) error) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("read audit: %w", err)
	}
	cc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	info, err := s.audit.Info(ctx)
	if err != nil {
		return fmt.Errorf("read audit: %w", err)
	}
	last := info.State.LastSeq
	if !follow && (info.State.Msgs == 0 || !since.IsZero() && info.State.LastTime.Before(since)) {
		return nil // nothing to read
	}
	cons, err := s.audit.OrderedConsumer(ctx, cc)
	if err != nil {
		return fmt.Errorf("read audit: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read audit: %w", err)
	}
	defer it.Stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			it.Stop() // ends a Next that waits for a new event
		case <-done:
		}
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("read audit: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read audit: %w", err)
		}
		var ev AuditEvent
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			s.log.Warn("store: an audit event cannot be read; skipped", "seq", md.Sequence.Stream, "err", err)
		} else {
			ev.Seq = md.Sequence.Stream
			if err := fn(ev); err != nil {
				return err
			}
		}
		if !follow && md.Sequence.Stream >= last {
			return nil
		}
	}
}
