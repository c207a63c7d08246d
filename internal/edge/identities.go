package edge

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// grantCommand is what an operator runs to let connector name offer
// service; refusals quote it.
func grantCommand(name, service string) string {
	return fmt.Sprintf("sallyport connectors grant %s %s", name, service)
}

// split returns the offered services that grants holds, and the others.
func split(offered, grants []string) (granted, ungranted []string) {
	for _, s := range offered {
		if slices.Contains(grants, s) {
			granted = append(granted, s)
		} else {
			ungranted = append(ungranted, s)
		}
	}
	return granted, ungranted
}

// revokedReason is what a revoked connector is told.
func revokedReason(c store.Connector) string {
	return fmt.Sprintf("connector %s (%s) was revoked at %s by the edge's operator; ask for a new keyfile",
		c.Name, c.ID, c.RevokedAt.UTC().Format(time.RFC3339))
}

// watchIdentities loads every connector's identity and keeps them current
// until stop is called: a change of grants re-routes the connector's live
// tunnels at once, a revocation closes them.
func (e *Edge) watchIdentities(ctx context.Context) (stop func(), err error) {
	return e.st.WatchConnectors(ctx, e.identityChanged)
}

// identityChanged applies a connector's record as the store now has it.
func (e *Edge) identityChanged(c store.Connector) {
	var revoked []*tunnel.Session
	e.conns.Lock()
	if old, ok := e.conns.ids[c.ID]; ok && old.Revision > c.Revision {
		e.conns.Unlock()
		return // the watch bringing a change this edge applied already
	}
	e.conns.ids[c.ID] = c
	delete(e.conns.warned, c.ID) // a later ungranted offer is news again
	if c.Revoked() {
		e.renewals.forget(c.ID)
	}
	for sess, info := range e.conns.byID[c.ID] {
		if info.draining {
			continue
		}
		if c.Revoked() {
			e.routes.Remove(sess)
			revoked = append(revoked, sess)
			continue
		}
		granted, _ := split(info.offered, c.Grants)
		added, removed := e.routes.Set(sess, granted)
		if len(added) > 0 || len(removed) > 0 {
			e.log.Info("connector grants changed: tunnel re-routed", "connector", c.ID, "name", c.Name,
				"remote", info.remote, "now_serves", granted, "added", added, "dropped", removed)
		}
	}
	e.conns.Unlock()
	for _, sess := range revoked {
		e.log.Warn("connector revoked: its tunnel is closed", "connector", c.ID, "name", c.Name, "revoked_at", c.RevokedAt)
		sess.Close()
	}
}

// identity returns connector id's record: as the watch delivered it, or
// from the store when the watch has not yet (a connector that enrolled a
// moment ago at another edge).
func (e *Edge) identity(ctx context.Context, id string) (store.Connector, error) {
	e.conns.Lock()
	c, ok := e.conns.ids[id]
	e.conns.Unlock()
	if ok {
		return c, nil
	}
	c, err := e.st.GetConnector(ctx, id)
	if err != nil {
		return store.Connector{}, err
	}
	e.conns.Lock()
	if _, ok := e.conns.ids[id]; !ok {
		e.conns.ids[id] = c
	}
	e.conns.Unlock()
	return c, nil
}

// ungrantedRefusals tells a connector which offers the edge refuses, and
// logs and audits each once.
func (e *Edge) ungrantedRefusals(c store.Connector, ungranted []string) []wire.ServiceRefusal {
	var out []wire.ServiceRefusal
	var news []string
	defer func() {
		for _, s := range news {
			e.auditRefusal(store.AuditEvent{Actor: "connector " + c.ID, Action: "hello", Subject: c.Name + " " + c.ID,
				Result: "refused: service " + s + " not granted", Detail: "to grant it: " + grantCommand(c.Name, s)})
		}
	}()
	e.conns.Lock()
	defer e.conns.Unlock()
	for _, s := range ungranted {
		cmd := grantCommand(c.Name, s)
		out = append(out, wire.ServiceRefusal{Service: s, Reason: "not granted to connector " + c.Name + "; the edge's operator can grant it: " + cmd})
		if !e.conns.warned[c.ID][s] {
			if e.conns.warned[c.ID] == nil {
				e.conns.warned[c.ID] = make(map[string]bool)
			}
			e.conns.warned[c.ID][s] = true
			news = append(news, s)
			e.log.Warn("connector offers a service it was not granted: refused", "connector", c.ID, "name", c.Name,
				"service", s, "to_grant", cmd)
		}
	}
	return out
}

// routedLocked reports whether the edge routes service through the
// tunnel info describes (any service when service is empty): offered,
// granted, not draining. e.conns is locked.
func (e *Edge) routedLocked(info *tunnelInfo, service string) bool {
	if info.draining {
		return false
	}
	granted, _ := split(info.offered, e.conns.ids[info.connectorID].Grants)
	if service == "" {
		return len(granted) > 0
	}
	return slices.Contains(granted, service)
}

// stopRouting stops routing clients to a tunnel whose connector is
// draining, for good; it reports whether the tunnel was routed until now.
func (e *Edge) stopRouting(sess *tunnel.Session) bool {
	e.conns.Lock()
	defer e.conns.Unlock()
	if info := e.conns.tunnels[sess]; info != nil {
		info.draining = true
	}
	return e.routes.Remove(sess)
}

// tunnelsOf counts connector id's live tunnels to this edge.
func (e *Edge) tunnelsOf(id string) int {
	e.conns.Lock()
	defer e.conns.Unlock()
	return len(e.conns.byID[id])
}

// poolFullLocked reports whether the connector of a new tunnel (info,
// not registered yet) holds as many tunnels as one identity may:
// config.MaxPool routed ones, and as many again no longer routed
// (superseded by a reload's new offer, finishing their streams). The
// tunnels the new one would supersede count as no longer routed.
// e.conns is locked.
func (e *Edge) poolFullLocked(info *tunnelInfo) bool {
	routed := 0
	for _, other := range e.conns.byID[info.connectorID] {
		if !other.draining && !supersedes(info, other) {
			routed++
		}
	}
	return routed >= config.MaxPool || len(e.conns.byID[info.connectorID]) >= 2*config.MaxPool
}

// poolFull is poolFullLocked for a new tunnel's hello.
func (e *Edge) poolFull(info *tunnelInfo) bool {
	e.conns.Lock()
	defer e.conns.Unlock()
	return e.poolFullLocked(info)
}

// supersedes reports whether a new tunnel (info) of a connector takes
// the place of its tunnel other: the same run of the connector
// (Hello.Instance) offering another set of services.
func supersedes(info, other *tunnelInfo) bool {
	return info.instance != "" && other.instance == info.instance && !slices.Equal(other.offered, info.offered)
}

// supersedeLocked stops routing clients to the connector's other tunnels
// from the same run (Hello.Instance) that offered another set of
// services than the new tunnel info: a connector whose config was
// reloaded announces its services on new tunnels, and lets the old ones
// finish their streams before it closes them. Only the connector's own
// tunnels are touched. e.conns is locked.
func (e *Edge) supersedeLocked(sess *tunnel.Session, info *tunnelInfo) {
	for other, oi := range e.conns.byID[info.connectorID] {
		if other == sess || oi.draining || !supersedes(info, oi) {
			continue
		}
		oi.draining = true
		e.routes.Remove(other)
		e.log.Info("connector re-announced its services: no more clients routed to its older tunnel", "connector", info.connectorID,
			"old", oi.offered, "new", info.offered)
	}
}

// register records a live tunnel and routes the services its connector
// offers and is granted, as the connector's record is now (which may have
// changed since the Hello was answered). It reports false, registering
// nothing, if the connector has been revoked meanwhile.
func (e *Edge) register(sess *tunnel.Session, info *tunnelInfo) (routed []string, ok bool) {
	e.conns.Lock()
	defer e.conns.Unlock()
	c := e.conns.ids[info.connectorID]
	if c.Revoked() {
		return nil, false
	}
	if e.poolFullLocked(info) {
		return nil, false // handshakes that raced past the check in serveTunnel
	}
	e.addTunnelLocked(sess, info)
	e.supersedeLocked(sess, info)
	routed, _ = split(info.offered, c.Grants)
	e.routes.Group(sess, info.connectorID) // a connector's pool is one replica
	e.routes.Set(sess, routed)
	return routed, true
}

// addTunnelLocked records a live tunnel in e.conns and its indexes;
// e.conns is locked.
func (e *Edge) addTunnelLocked(sess *tunnel.Session, info *tunnelInfo) {
	e.conns.tunnels[sess] = info
	e.conns.byID.add(info.connectorID, sess, info)
	e.conns.byName.add(info.name, sess, info)
}

// removeTunnelLocked forgets a tunnel that has ended, in e.conns and its
// indexes, and returns what was known of it (nil if nothing); e.conns is
// locked.
func (e *Edge) removeTunnelLocked(sess *tunnel.Session) *tunnelInfo {
	info := e.conns.tunnels[sess]
	if info == nil {
		return nil
	}
	delete(e.conns.tunnels, sess)
	e.conns.byID.remove(info.connectorID, sess)
	e.conns.byName.remove(info.name, sess)
	return info
}

// tunnelIndex holds live tunnels by a key (a connector's id or name).
type tunnelIndex map[string]map[*tunnel.Session]*tunnelInfo

func (x tunnelIndex) add(key string, sess *tunnel.Session, info *tunnelInfo) {
	if x[key] == nil {
		x[key] = make(map[*tunnel.Session]*tunnelInfo)
	}
	x[key][sess] = info
}

func (x tunnelIndex) remove(key string, sess *tunnel.Session) {
	delete(x[key], sess)
	if len(x[key]) == 0 {
		delete(x, key)
	}
}
