package edge

import (
	"fmt"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
)

// recentRefusals is how many refusals the dashboard can list: the last
// ones, whatever a flood of them.
const recentRefusals = 100

// Live lists the client connections the edge carries now, for the
// dashboard; connectors are named as their certificates name them.
func (e *Edge) Live() []admin.LiveConn {
	if e.listeners == nil { // not started
		return nil
	}
	live := e.listeners.Live()
	out := make([]admin.LiveConn, len(live))
	e.conns.Lock()
	for i, c := range live {
		name := c.Connector
		if id, ok := e.conns.ids[c.Connector]; ok {
			name = id.Name
		}
		out[i] = admin.LiveConn{Service: c.Service, Connector: name, Client: c.Client, Via: c.Via, Since: c.Since,
			BytesIn: c.BytesIn, BytesOut: c.BytesOut}
	}
	e.conns.Unlock()
	return out
}

// RecentRefusals lists the last clients turned away, newest first, for
// the dashboard.
func (e *Edge) RecentRefusals() []admin.Refusal {
	recs := e.recent.List()
	out := make([]admin.Refusal, len(recs))
	for i, r := range recs {
		out[i] = admin.Refusal{Time: r.Time, Reason: string(r.Reason), Service: r.Service, Client: r.Client, Via: r.Via, Message: r.Msg}
	}
	return out
}

// policyStatus is a service's policy as the admin API shows it.
func policyStatus(p config.Policy) admin.PolicyStatus {
	ps := admin.PolicyStatus{Allow: p.Allow, Deny: p.Deny, ClientCA: p.ClientCA != "", RequireSession: p.RequireSession,
		MaxConnections: p.MaxConnections}
	if p.Rate.Connections > 0 {
		every, burst := p.Rate.Interval()
		ps.Rate = fmt.Sprintf("one per %s, bursts of %d", every, burst)
	}
	return ps
}
