package edge

import (
	"context"
	"fmt"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/store"
	"golang.org/x/time/rate"
)

// Refusals that strangers can cause (enrollments with a real token id, a
// revoked connector's reconnects) are audited at most this fast, so that
// nobody can fill the store's disk with them; the log still has each.
const (
	auditRefusalsEvery = 100 * time.Millisecond
	auditRefusalsBurst = 100
)

// auditTimeout bounds one audit write; the caller never waits longer.
const auditTimeout = 2 * time.Second

// audit records an event in the store's audit trail. A failure is logged,
// never returned: the action it records has happened.
func (e *Edge) audit(ev store.AuditEvent) {
	ev.Edge = e.id
	if ev.Time.IsZero() {
		ev.Time = e.now()
	}
	ctx, cancel := context.WithTimeout(context.Background(), auditTimeout)
	defer cancel()
	if err := e.st.Audit(ctx, ev); err != nil {
		e.log.Error("audit event not recorded", "action", ev.Action, "subject", ev.Subject, "result", ev.Result, "err", err)
	}
}

// auditRefusal records a refusal a stranger may repeat, within the rate
// that auditRefusals allows.
func (e *Edge) auditRefusal(ev store.AuditEvent) {
	if !e.auditRefusals.Allow() {
		e.log.Debug("audit: refusal not recorded (too many)", "action", ev.Action, "subject", ev.Subject)
		return
	}
	e.audit(ev)
}

// newAuditLimiter makes the limiter for auditRefusal.
func newAuditLimiter() *rate.Limiter {
	return rate.NewLimiter(rate.Every(auditRefusalsEvery), auditRefusalsBurst)
}

// ReadAudit reads the audit trail, for the admin API.
func (e *Edge) ReadAudit(ctx context.Context, since time.Time, follow bool, fn func(store.AuditEvent) error) error {
	return e.st.ReadAudit(ctx, since, follow, fn)
}

// Called records an admin call, for the admin API.
func (e *Edge) Called(ctx context.Context, method, path string, status int) {
	result := "ok"
	if status >= 400 {
		result = fmt.Sprintf("refused: HTTP %d", status)
	}
	e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "admin.call", Subject: method + " " + path, Result: result})
}
