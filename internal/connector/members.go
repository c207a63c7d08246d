package connector

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

// clusterFile keeps the edge set the cluster last announced, so that a
// restarted connector dials every edge at once, not only its keyfile's.
const clusterFile = "cluster.json"

// membershipTimeout bounds the read of a membership stream's body.
const membershipTimeout = 10 * time.Second

// fleet is the set of edges the connector keeps tunnels to: one loop
// (of tunnel.pool tunnels) per edge. An edge comes from the connector's
// own addresses (edges:, the keyfile's, or those saved at enrollment)
// or from the set the cluster announces (step 8 of the wire protocol).
type fleet struct {
	mu sync.Mutex
	// loops are the running edge loops, by key: "addr " + address for
	// the connector's own addresses, "edge " + id for announced edges.
	loops map[string]*edgeLoop
	// saved and reached are what clusterFile holds (see savedCluster).
	saved   []wire.EdgeAddr
	reached map[string]string
	// followed is set once a set has been followed: only edges announced
	// after that are spread over tunnel.join_spread (a connector that
	// starts knowing no set is one connector, not a herd).
	followed bool

	// wg counts the loops' goroutines; once stopped is set (under mu)
	// no loop starts, so that wait's Wait never races a late start.
	wg      sync.WaitGroup
	stopped bool
	// ctx is Run's context, and id its identity; set before any loop.
	ctx context.Context
	id  identity
}

// edgeLoop is the pool of tunnels to one edge.
type edgeLoop struct {
	addr string
	// edgeID is the edge's id: announced, or learned from its Welcome.
	edgeID string
	// pinned loops are the operator's edges: never stopped.
	pinned bool
	// own is set for the connector's own addresses (pinned or not).
	own bool
	// missing is when the edge was first absent from the announced set
	// (zero while it is present).
	missing time.Time
	cancel  context.CancelFunc
}

// startFleet starts a loop for each of the connector's own addresses and
// for each edge of the saved announced set, and the loop that stops the
// edges that left; all end with ctx.
func (c *Connector) startFleet(ctx context.Context, id identity) {
	saved, reached, err := loadCluster(c.cfg.DataDir)
	if err != nil {
		c.log.Warn("the saved cluster membership cannot be read; starting from the configured edges", "err", err)
	}
	f := &c.fleet
	f.mu.Lock()
	f.ctx, f.id = ctx, id
	f.loops = make(map[string]*edgeLoop)
	f.saved, f.reached = saved, reached
	for _, addr := range id.edges {
		l := &edgeLoop{addr: addr, own: true, pinned: slices.Contains(c.cfg.Edges, addr), edgeID: reached[addr]}
		c.startLoopLocked("addr "+addr, l, 0)
	}
	f.mu.Unlock()
	c.follow(saved, false)
	f.wg.Go(func() { c.dropLeavers(ctx) })
}

// startLoopLocked runs l's pool of tunnel loops under key after delay;
// c.fleet is locked.
func (c *Connector) startLoopLocked(key string, l *edgeLoop, delay time.Duration) {
	if c.fleet.stopped {
		return
	}
	ctx, cancel := context.WithCancel(c.fleet.ctx)
	l.cancel = cancel
	c.fleet.loops[key] = l
	for slot := range c.cfg.Tunnel.Pool {
		c.fleet.wg.Go(func() {
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return
				}
			}
			c.keepTunnel(ctx, l.addr, slot, c.fleet.id)
		})
	}
}

// waitFleet waits, once Run's context has ended, for every edge loop; no
// loop starts after it is called.
func (c *Connector) waitFleet() {
	c.fleet.mu.Lock()
	c.fleet.stopped = true
	c.fleet.mu.Unlock()
	c.fleet.wg.Wait()
}

// learnEdge records that the edge at addr is edge id (its Welcome says
// so). A loop to an announced edge that one of the connector's own
// addresses reaches already is stopped: one pool per edge.
func (c *Connector) learnEdge(addr, id string) {
	if id == "" {
		return
	}
	f := &c.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loops == nil {
		return // enrollment, before the fleet starts
	}
	own, ok := f.loops["addr "+addr]
	if !ok {
		return
	}
	own.edgeID = id
	if dup, ok := f.loops["edge "+id]; ok && dup.addr != addr {
		c.log.Info("an announced edge is one of this connector's own addresses: one pool kept", "edge", id, "address", addr, "announced", dup.addr)
		c.stopLoopLocked("edge "+id, dup)
	}
}

// stopLoopLocked ends loop key and its tunnels; c.fleet is locked.
func (c *Connector) stopLoopLocked(key string, l *edgeLoop) {
	l.cancel()
	delete(c.fleet.loops, key)
	c.tunnels.Lock()
	var live []*tunnel.Session
	for k, s := range c.tunnels.up {
		if k == l.addr || strings.HasPrefix(k, l.addr+"#") {
			live = append(live, s)
		}
	}
	c.tunnels.Unlock()
	if c.fleet.stopped {
		return // Run closes every tunnel itself
	}
	for _, s := range live {
		c.fleet.wg.Go(func() { s.Shutdown() }) // up to a second: not under the lock
	}
}

// follow applies an announced edge set: it starts a loop to each edge it
// does not reach yet (after a random wait up to tunnel.join_spread when
// spread is set and a set was followed before), and marks the edges absent from it, which dropLeavers
// stops after tunnel.leave_grace. Each edge is dialled at the first of
// its addresses.
func (c *Connector) follow(set []wire.EdgeAddr, spread bool) {
	if len(set) == 0 {
		return // no set saved yet (an edge always announces itself)
	}
	f := &c.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	spread = spread && f.followed
	f.followed = true
	first := map[string]string{} // id → first address
	var ids []string
	addrs := map[string]bool{}
	for _, e := range set {
		addrs[e.Address] = true
		if _, ok := first[e.ID]; !ok {
			first[e.ID] = e.Address
			ids = append(ids, e.ID)
		}
	}
	kept := c.chosenEdges(ids)
	now := c.now()
	for key, l := range f.loops {
		id := l.edgeID
		present := addrs[l.addr] || (id != "" && first[id] != "")
		// An edge not yet known by its id stays until its Welcome says.
		chosen := kept == nil || id == "" || kept[id]
		switch {
		case present && chosen:
			l.missing = time.Time{}
		case l.pinned:
		case l.missing.IsZero():
			l.missing = now
			why := "an edge is missing from the cluster's set; its tunnel stops unless it returns"
			if present {
				why = "an edge is beyond tunnel.max_edges for this connector; its tunnel stops unless another leaves"
			}
			c.log.Info(why, "edge", cmpOr(id, l.addr), "grace", c.cfg.Tunnel.LeaveGrace.String(), "loop", key)
		}
	}
	for _, id := range ids {
		if kept != nil && !kept[id] || c.reachedLocked(id, first[id]) {
			continue
		}
		var delay time.Duration
		if spread {
			delay = time.Duration(rand.Int64N(int64(c.cfg.Tunnel.JoinSpread) + 1))
		}
		c.log.Info("the cluster announces an edge: dialling it", "edge", id, "address", first[id], "in", delay.Round(time.Millisecond).String())
		c.startLoopLocked("edge "+id, &edgeLoop{addr: first[id], edgeID: id}, delay)
	}
}

// chosenEdges returns the tunnel.max_edges edges of ids this connector
// keeps, or nil for all of them: those ranked first by a hash of the
// connector's id and the edge's (rendezvous hashing), so that connectors
// spread evenly over the edges and an edge that comes or goes moves only
// the connectors that rank it among their first.
func (c *Connector) chosenEdges(ids []string) map[string]bool {
	me := ""
	if leaf := c.fleet.id.cert.Leaf; leaf != nil {
		me = pki.ConnectorID(leaf)
	}
	return rendezvous(me, ids, c.cfg.Tunnel.MaxEdges)
}

// rendezvous returns the k edges of ids that connector me ranks first
// (see chosenEdges), or nil for all of them when k is 0 or not below
// their number.
func rendezvous(me string, ids []string, k int) map[string]bool {
	if k <= 0 || k >= len(ids) {
		return nil
	}
	rank := func(id string) uint64 {
		h := sha256.Sum256([]byte(me + "/" + id))
		return binary.BigEndian.Uint64(h[:8])
	}
	ranked := slices.Clone(ids)
	slices.SortFunc(ranked, func(a, b string) int { return cmp.Compare(rank(a), rank(b)) })
	kept := make(map[string]bool, k)
	for _, id := range ranked[:k] {
		kept[id] = true
	}
	return kept
}

// reachedLocked reports whether a loop reaches edge id already: its own
// announced loop, any loop that dials addr, or one of the connector's own
// addresses that answered as id. c.fleet is locked.
func (c *Connector) reachedLocked(id, addr string) bool {
	if _, ok := c.fleet.loops["edge "+id]; ok {
		return true
	}
	for _, l := range c.fleet.loops {
		if l.addr == addr || l.own && l.edgeID == id {
			return true
		}
	}
	return false
}

// dropLeavers stops, until ctx ends, the loops of edges missing from the
// announced set for longer than tunnel.leave_grace.
func (c *Connector) dropLeavers(ctx context.Context) {
	grace := c.cfg.Tunnel.LeaveGrace
	t := time.NewTicker(min(max(grace/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := c.now()
		c.fleet.mu.Lock()
		for key, l := range c.fleet.loops {
			if !l.missing.IsZero() && now.Sub(l.missing) >= grace {
				c.log.Info("an edge left the cluster: its tunnel stopped", "edge", cmpOr(l.edgeID, l.addr), "address", l.addr, "missing_for", now.Sub(l.missing).Round(time.Millisecond).String())
				c.stopLoopLocked(key, l)
			}
		}
		c.fleet.mu.Unlock()
	}
}

// membershipUpdate reads the edge set on st, a membership stream from the
// edge at addr, answers it, and follows the set. A set it cannot read
// (malformed, oversized, an address it could not dial) is refused with
// one warning and changes nothing.
func (c *Connector) membershipUpdate(st *tunnel.Stream, edge string) {
	st.SetReadDeadline(time.Now().Add(membershipTimeout))
	set, err := wire.ReadEdgeSet(st)
	if err == nil {
		err = checkEdgeSet(set)
	}
	if err != nil {
		c.log.Warn("the edge sent a membership update this connector cannot read; ignored, the tunnels are kept", "edge", edge, "err", err)
		st.Reply(wire.StreamReply{Code: wire.CodeBadRequest, Reason: "edge set refused: " + err.Error()})
		return
	}
	st.Reply(wire.StreamReply{Code: wire.CodeOK, Service: wire.EdgesService})
	if c.isDraining() {
		return
	}
	c.follow(set, true)
	c.saveCluster(set)
}

// checkEdgeSet checks that every address is one the connector can dial:
// host:port with a port number, or a wss:// address.
func checkEdgeSet(set []wire.EdgeAddr) error {
	if len(set) == 0 {
		return errors.New("an empty edge set (an edge always announces itself)")
	}
	for _, e := range set {
		if wstunnel.IsAddress(e.Address) {
			if _, err := wstunnel.ParseAddress(e.Address); err != nil {
				return fmt.Errorf("edge %s: %w", e.ID, err)
			}
			continue
		}
		host, port, err := net.SplitHostPort(e.Address)
		if err != nil {
			return fmt.Errorf("edge %s: address %q: %w", e.ID, e.Address, err)
		}
		if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("edge %s: address %q is not host:port", e.ID, e.Address)
		}
	}
	return nil
}

// savedCluster is clusterFile's content.
type savedCluster struct {
	Edges []savedEdge `json:"edges"`
	// Reached maps each of the connector's own addresses to the id of
	// the edge that answered there, so that a restarted connector does
	// not dial that edge a second time at its announced address before
	// its own address has answered again.
	Reached map[string]string `json:"reached,omitempty"`
}

type savedEdge struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// saveCluster keeps set, and the ids the connector's own addresses
// answered as, in the data directory when they differ from those saved;
// a failure is logged (the connector keeps running on them).
func (c *Connector) saveCluster(set []wire.EdgeAddr) {
	f := &c.fleet
	f.mu.Lock()
	defer f.mu.Unlock()
	reached := map[string]string{}
	for _, l := range f.loops {
		if l.own && l.edgeID != "" {
			reached[l.addr] = l.edgeID
		}
	}
	if slices.Equal(set, f.saved) && maps.Equal(reached, f.reached) {
		return
	}
	out := savedCluster{Edges: make([]savedEdge, len(set)), Reached: reached}
	for i, e := range set {
		out.Edges[i] = savedEdge{e.ID, e.Address}
	}
	b, _ := json.Marshal(out)
	if err := atomicfile.Write(filepath.Join(c.cfg.DataDir, clusterFile), b, 0o600); err != nil {
		c.log.Warn("could not save the cluster's edge set; a restart starts from the configured edges", "err", err)
		return
	}
	f.saved, f.reached = slices.Clone(set), reached
}

// loadCluster reads the saved edge set and the ids the connector's own
// addresses answered as; none is an empty set.
func loadCluster(dir string) ([]wire.EdgeAddr, map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, clusterFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", clusterFile, err)
	}
	var in savedCluster
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", filepath.Join(dir, clusterFile), err)
	}
	set := make([]wire.EdgeAddr, len(in.Edges))
	for i, e := range in.Edges {
		set[i] = wire.EdgeAddr{ID: e.ID, Address: e.Address}
	}
	// What was saved was checked when it came; check it again, as the
	// file may have been edited: the encoder refuses what a peer could not send.
	if _, err := wire.AppendEdgeSet(nil, set); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", clusterFile, err)
	}
	if len(set) == 0 {
		return nil, nil, nil
	}
	if err := checkEdgeSet(set); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", clusterFile, err)
	}
	return set, in.Reached, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Edges lists the addresses of the edges the connector keeps tunnels to
// (or dials), sorted.
func (c *Connector) Edges() []string {
	c.fleet.mu.Lock()
	defer c.fleet.mu.Unlock()
	var out []string
	for _, l := range c.fleet.loops {
		out = append(out, l.addr)
	}
	slices.Sort(out)
	return out
}
