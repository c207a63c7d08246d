package edge

import (
	"context"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/fence"
	"github.com/sallyport/sallyport/internal/wire"
)

// The freshness fence is package fence's (docs/cluster.md §5); here is
// what the edge does with it.

// FencedReason is what a fenced edge tells connectors and logs for
// clients it turns away.
const FencedReason = "this edge has lost its store; try another edge"

// Fenced reports whether the edge is fenced: it cannot reach its store,
// so it refuses hellos, enrollments, renewals and session uses, routes no
// new client and holds no tunnel. Readiness fails while it is.
func (e *Edge) Fenced() bool { return e.fence.Fenced() }

// fenceChecks are the fence's checks of this edge's store, with presence
// the edge's presence renewal.
func (e *Edge) fenceChecks(presence func(context.Context) error) fence.Checks {
	c := fence.Checks{Presence: presence, CaughtUp: e.st.ConnectorsCaughtUp}
	if m, ok := e.plainStore().(clusterMember); ok {
		c.Quorum = m.Quorum
	}
	return c
}

// clusterMember is a store that may be a member of a cluster of embedded
// NATS servers (store.JetStream).
type clusterMember interface {
	Quorum(window time.Duration) (member, hears bool)
}

// fencedTunnels closes every tunnel when the edge is fenced: at once and
// side by side, for each Shutdown may wait a second for its connector's
// close, and the fence must go on ticking.
func (e *Edge) fencedTunnels() {
	for _, s := range e.sessions() {
		e.handlers.Go(func() { s.Shutdown() })
	}
}

// fencedRefusal is the refusal a fenced edge gives a connector's opening
// (hello, enrollment, renewal); nil when the edge is not fenced.
func (e *Edge) fencedRefusal() *wire.Refusal {
	if !e.Fenced() {
		return nil
	}
	return &wire.Refusal{Code: wire.CodeUnavailable, Reason: FencedReason}
}

// fencedClient refuses client c (for service, if named) while the edge is
// fenced; nil when it is not.
func (e *Edge) fencedClient(service string, c admission.Client) *admission.Refusal {
	if !e.Fenced() {
		return nil
	}
	return e.Refused(admission.Refuse(admission.ReasonStoreLost, service, "%s", FencedReason), c)
}
