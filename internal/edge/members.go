package edge

import (
	"context"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/fence"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// announceTimeout bounds how long the edge waits for a connector to
// acknowledge a membership stream before it closes the stream.
const announceTimeout = 10 * time.Second

// members is what this edge knows of the cluster's edges: the presence
// records its watch delivered, and the set it last told its connectors.
type members struct {
	mu sync.Mutex
	// live are the other edges' presence records, by id.
	live map[string]store.EdgePresence
	// sent is the set last announced to every tunnel.
	sent []wire.EdgeAddr
	// leaving is set once this edge stops: it announces itself no more.
	leaving bool
	// changed wakes the announcer (capacity 1: a wake-up is never lost
	// and never queued twice).
	changed chan struct{}
	started time.Time
}

// startMembers begins the edge's part in the cluster: it watches the
// presence bucket, renews its own presence every fence.Tick (which also
// drives the freshness fence) and tells its connectors whenever the set
// of edges changes, until ctx ends. leave, called after ctx has ended,
// waits for those loops, marks the edge draining and deletes its key, so
// the other edges drop it at once instead of after the key's lifetime.
func (e *Edge) startMembers(ctx context.Context) (leave func(), err error) {
	e.members.live = make(map[string]store.EdgePresence)
	e.members.changed = make(chan struct{}, 1)
	e.members.started = e.now().UTC()
	stopWatch, err := e.st.WatchPresence(ctx, e.edgeUp, e.edgeGone)
	if err != nil {
		return nil, err
	}
	put := func(ctx context.Context) error { return e.st.PutPresence(ctx, e.presence(false)) }
	pctx, cancel := context.WithTimeout(ctx, fence.After)
	err = put(pctx)
	cancel()
	if err != nil {
		e.log.Warn("could not write this edge's presence yet; will retry", "err", err)
	}
	// The fence guards a store that other edges share (an external one,
	// or the embedded server in a cluster); the embedded store of a lone
	// edge lives and dies with it.
	e.fence.Enable(e.cfg.Store.URL != "" || e.cfg.Cluster.Listen != "")
	var loops sync.WaitGroup
	loops.Go(func() { e.fence.Run(ctx, e.fenceChecks(put)) })
	loops.Go(func() { e.announceChanges(ctx) })
	return func() {
		loops.Wait()
		e.members.mu.Lock()
		e.members.leaving = true
		e.members.mu.Unlock()
		lctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := e.st.PutPresence(lctx, e.presence(true)); err == nil {
			err = e.st.DeletePresence(lctx, e.id)
		}
		if err != nil {
			e.log.Warn("could not remove this edge's presence; the other edges drop it when it lapses", "lapses_in", store.PresenceTTL.String(), "err", err)
		}
		stopWatch()
	}, nil
}

// presence is this edge's presence record.
func (e *Edge) presence(draining bool) store.EdgePresence {
	p := store.EdgePresence{ID: e.id, Addresses: e.advertise, Draining: draining, Started: e.members.started,
		Connectors: e.connectorsHeld()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		p.Version = bi.Main.Version
	}
	return p
}

// edgeUp records an edge's presence as the watch delivered it.
func (e *Edge) edgeUp(p store.EdgePresence) {
	if p.ID == e.id {
		return // this edge is always in its own set while it runs
	}
	e.members.mu.Lock()
	e.members.live[p.ID] = p
	e.members.mu.Unlock()
	e.wakeAnnouncer()
}

// edgeGone forgets an edge whose key was deleted or lapsed.
func (e *Edge) edgeGone(id string) {
	e.members.mu.Lock()
	_, had := e.members.live[id]
	delete(e.members.live, id)
	e.members.mu.Unlock()
	if had {
		e.wakeAnnouncer()
	}
}

func (e *Edge) wakeAnnouncer() {
	select {
	case e.members.changed <- struct{}{}:
	default:
	}
}

// edgeSet is the cluster as connectors should see it: this edge's
// addresses first, then every other live edge not draining, by id; at
// most wire.MaxEdges addresses.
func (e *Edge) edgeSet() []wire.EdgeAddr {
	e.members.mu.Lock()
	defer e.members.mu.Unlock()
	var set []wire.EdgeAddr
	add := func(p store.EdgePresence) {
		for _, a := range p.Addresses {
			if len(set) < wire.MaxEdges {
				set = append(set, wire.EdgeAddr{ID: p.ID, Address: a})
			}
		}
	}
	if !e.members.leaving {
		add(store.EdgePresence{ID: e.id, Addresses: e.advertise})
	}
	ids := make([]string, 0, len(e.members.live))
	for id, p := range e.members.live {
		if !p.Draining {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		add(e.members.live[id])
	}
	return set
}

// edgeAddresses is the edge set's addresses, for a Welcome.
func edgeAddresses(set []wire.EdgeAddr) []string {
	out := make([]string, len(set))
	for i, a := range set {
		out[i] = a.Address
	}
	return out
}

// announceChanges tells every tunnel the edge set each time it changes,
// until ctx ends.
func (e *Edge) announceChanges(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.members.changed:
		}
		set := e.edgeSet()
		e.members.mu.Lock()
		same := slices.Equal(set, e.members.sent)
		e.members.sent = set
		e.members.mu.Unlock()
		if same {
			continue
		}
		e.log.Info("cluster membership changed: telling the connectors", "edges", len(set), "tunnels", len(e.sessions()))
		for _, sess := range e.sessions() {
			e.announce(sess, set)
		}
	}
}

// announce sends set to the connector at the other end of sess on a
// membership stream (step 8 of the wire protocol), in a goroutine of
// e.handlers; the connector's acknowledgement is awaited for at most
// announceTimeout.
func (e *Edge) announce(sess *tunnel.Session, set []wire.EdgeAddr) {
	body, err := wire.AppendEdgeSet(nil, set)
	if err != nil {
		e.log.Error("cannot encode the edge set; connectors keep the last one", "err", err)
		return
	}
	e.handlers.Go(func() {
		st, err := sess.Open(wire.StreamOpen{Service: wire.EdgesService})
		if err != nil {
			return // the tunnel is going: its connector redials and hears the set then
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(announceTimeout))
		if _, err := st.Write(body); err != nil {
			return
		}
		st.CloseWrite()
		if err := st.Accepted(); err != nil {
			e.log.Debug("a connector did not take the edge set (an older release, or it could not read it)",
				"connector", e.connectorOf(sess), "err", err)
		}
	})
}

// sessions lists the live tunnels.
func (e *Edge) sessions() []*tunnel.Session {
	e.conns.Lock()
	defer e.conns.Unlock()
	out := make([]*tunnel.Session, 0, len(e.conns.tunnels))
	for s := range e.conns.tunnels {
		out = append(out, s)
	}
	return out
}

// Members is the edge set this edge tells its connectors: this edge
// first, then every other live edge that is not draining.
func (e *Edge) Members() []wire.EdgeAddr { return e.edgeSet() }

// clusterStatus is the edge set for the admin API.
func (e *Edge) clusterStatus() []admin.ClusterEdge {
	var out []admin.ClusterEdge
	for _, a := range e.edgeSet() {
		out = append(out, admin.ClusterEdge{ID: a.ID, Address: a.Address})
	}
	return out
}
