package edge

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/ingress"
	"github.com/sallyport/sallyport/internal/openings"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// maxOffered bounds the services one Hello may offer.
const maxOffered = 1024

func (e *Edge) tunnelConfig() tunnel.Config {
	return tunnel.Config{
		KeepaliveInterval: e.cfg.Tunnel.KeepaliveInterval,
		KeepaliveTimeout:  e.cfg.Tunnel.KeepaliveTimeout,
		ReceiveBudget:     int64(e.cfg.Tunnel.ReceiveBudgetMiB) << 20,
	}
}

// acceptTunnels accepts connections on the tunnel port until l is closed.
// A transient accept error (out of file descriptors) is retried after a
// pause. Connections in their unauthenticated opening are bounded in all
// and per source address, shedding the oldest at a bound (see openings),
// so a flood of silent connections can neither use up the edge's file
// descriptors or memory nor lock a connector out.
func (e *Edge) acceptTunnels(ctx context.Context, l net.Listener) {
	for {
		c, ok := ingress.Accept(ctx, l, "tunnel port", e.log)
		if !ok {
			return
		}
		e.takeTunnel(ctx, c, "")
	}
}

// Tunnel serves a connector's tunnel that came in a WebSocket on an https
// listener as one from the tunnel port, under the same bounds on
// openings (ingress.Dispatcher). It owns c.
func (e *Edge) Tunnel(ctx context.Context, c net.Conn) { e.takeTunnel(ctx, c, "websocket") }

// takeTunnel counts c among the openings, shedding the oldest at a bound,
// and serves it in a goroutine of e.handlers; via names its transport in
// logs ("" for the tunnel port). It owns c.
func (e *Edge) takeTunnel(ctx context.Context, c net.Conn, via string) {
	if old := e.openings.Admit(c); old != nil {
		old.Close()
		if ok, unsaid := e.sheddingLines.Allow(nil, time.Now()); ok {
			e.log.Warn("tunnel port: too many connections in their opening; the oldest closed", "limit", e.openings.Max,
				"per_source", e.openings.PerSource, "from", openings.RemoteIP(old).String(), "more_closed_unlogged", unsaid)
		}
	}
	e.handlers.Go(func() { e.serveTunnelPort(ctx, c, via, func() bool { return e.openings.Done(c) }) })
}

// serveTunnelPort runs the TLS handshake and the opening exchange on a new
// tunnel-port connection, then either enrolls the connector or serves its
// tunnel; via names its transport in logs ("" for the tunnel port's
// TCP). It owns raw and closes it (directly, or through the session).
// It calls opened once the opening is over, whatever its outcome; opened
// reports false if the connection was shed meanwhile, and then its first
// message is not acted on.
func (e *Edge) serveTunnelPort(ctx context.Context, raw net.Conn, via string, opened func() bool) {
	var openedOnce sync.Once
	var kept bool
	done := func() bool {
		openedOnce.Do(func() { kept = opened() })
		return kept
	}
	defer done()
	remote := raw.RemoteAddr().String()
	log := e.log.With("remote", remote)
	if via != "" {
		log = log.With("via", via)
	}
	// The ClientHello must come soon; the rest of the handshake may take
	// up to its own bound.
	raw.SetReadDeadline(time.Now().Add(openings.FirstRecordTimeout))
	tc := tls.Server(tunnel.NewTransport(&openings.FirstRecordConn{Conn: raw}), e.tlsConfig)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		if expiredClientCert(err) {
			log.Warn(expiredMessage(err))
		} else {
			e.strangerWarn(log, "tunnel port: TLS handshake failed", "err", err)
		}
		raw.Close()
		return
	}
	kind, body, err := tunnel.ReadOpening(ctx, tc, e.tunnelConfig())
	if !done() { // the unauthenticated part is over
		// Shed at a bound while its first message came: its shedder
		// closes it. Acting on the message anyway would, for an
		// enrollment, use up the token without the connector ever
		// getting its certificate (and its retry be refused: used).
		tc.Close()
		return
	}
	if err != nil {
		var ve *wire.VersionError
		if errors.As(err, &ve) {
			log.Error("connector refused: it speaks another protocol version", "err", err)
		} else {
			e.strangerWarn(log, "tunnel port: bad opening, connection closed", "err", err)
		}
		tc.Close()
		return
	}
	if ref := e.fencedRefusal(); ref != nil {
		log.Warn("tunnel port: "+kind.String()+" refused: the edge is fenced", "reason", ref.Reason)
		tunnel.Refuse(tc, ref)
		return
	}
	switch kind {
	case wire.KindEnrollRequest:
		e.serveEnroll(ctx, tc, body, log)
	case wire.KindHello:
		e.serveTunnel(ctx, tc, body, cmp.Or(via, "tcp"), log)
	case wire.KindRenewRequest:
		e.serveRenew(ctx, tc, body, log)
	case wire.KindJoinRequest:
		e.serveJoin(ctx, tc, body, log)
	case wire.KindTimeRequest:
		e.serveTime(tc, body, log)
	default:
		e.strangerWarn(log, "tunnel port: unexpected opening message, connection closed", "kind", kind.String())
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeBadRequest, Reason: "expected hello, enroll request, renew request, join request or time request, got " + kind.String()})
	}
}

// strangerWarn logs msg for a tunnel-port connection that failed before
// it authenticated, at most refusalLinesPerSecond lines a second for each
// msg: a flood of strangers writes a few lines with a count, not one a
// connection. The next line says how many went unlogged.
func (e *Edge) strangerWarn(log *slog.Logger, msg string, args ...any) {
	ok, unsaid := e.openingLines.Allow(msg, e.now())
	if !ok {
		return
	}
	if unsaid > 0 {
		args = append(args, "more_unlogged", unsaid)
	}
	log.Warn(msg, args...)
}

// serveTunnel admits a connector's tunnel and routes to it; the routes
// go when the tunnel ends (tunnelEnded). log names its remote address
// (and transport).
func (e *Edge) serveTunnel(ctx context.Context, tc *tls.Conn, body []byte, via string, log *slog.Logger) {
	remote := tc.RemoteAddr().String()
	cert, err := pki.PeerConnector(tc.ConnectionState())
	if err != nil {
		log.Warn("tunnel refused: no client certificate", "err", err)
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeNotEnrolled, Reason: "no client certificate: enroll this connector with a keyfile first"})
		return
	}
	id := pki.ConnectorID(cert)
	log = log.With("connector", id, "name", cert.Subject.CommonName)
	var hello wire.Hello
	if err := wire.Decode(wire.KindHello, body, &hello); err != nil {
		log.Warn("tunnel refused: bad hello", "err", err)
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeBadRequest, Reason: err.Error()})
		return
	}
	if ref := checkHello(hello); ref != nil {
		log.Warn("tunnel refused: bad hello", "reason", ref.Reason)
		tunnel.Refuse(tc, ref)
		return
	}
	rec, err := e.identity(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Warn("tunnel refused: connector unknown to this edge's store")
		e.auditRefusal(store.AuditEvent{Actor: "connector " + id, Action: "hello", Subject: cert.Subject.CommonName + " " + id, Result: "refused: not enrolled at this edge"})
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeNotEnrolled, Reason: "this edge has no record of connector " + id + ": enroll it again with a new keyfile"})
		return
	case err != nil:
		log.Error("tunnel refused: store unavailable", "err", err)
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeUnavailable, Reason: "the edge cannot read its store now; try again later"})
		return
	case rec.Revoked():
		log.Warn("tunnel refused: connector revoked", "revoked_at", rec.RevokedAt)
		e.auditRefusal(store.AuditEvent{Actor: "connector " + id, Action: "hello", Subject: rec.Name + " " + id, Result: "refused: revoked"})
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeRevoked, Reason: revokedReason(rec)})
		return
	}
	info := &tunnelInfo{connectorID: id, name: cert.Subject.CommonName, remote: remote, via: via, since: e.now(), offered: hello.Services, instance: hello.Instance}
	if n := e.tunnelsOf(id); e.poolFull(info) {
		log.Warn("tunnel refused: the connector has the most tunnels one identity may hold", "tunnels", n)
		e.auditRefusal(store.AuditEvent{Actor: "connector " + id, Action: "hello", Subject: rec.Name + " " + id, Result: fmt.Sprintf("refused: %d tunnels held already", n)})
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeBadRequest, Reason: fmt.Sprintf(
			"connector %s already holds %d tunnels to this edge, the most one identity may (tunnel.pool is at most %d; tunnels a reload replaced count until they close)", rec.Name, n, config.MaxPool)})
		return
	}
	_, ungranted := split(hello.Services, rec.Grants)
	edges := e.edgeSet()
	welcome := wire.Welcome{EdgeID: e.id, Edges: edgeAddresses(edges), Refused: e.ungrantedRefusals(rec, ungranted)}
	sess, err := tunnel.Server(tc, e.tunnelConfig(), welcome)
	if err != nil {
		log.Warn("tunnel failed during handshake", "err", err)
		return
	}
	info.since = e.now()
	// Counted before its routes show, so that whoever sees them sees it.
	e.metrics.TunnelUp(info.name)
	routed, ok := e.register(sess, info)
	if !ok {
		e.metrics.TunnelDown(info.name)
		log.Warn("tunnel closed after its handshake: the connector was revoked meanwhile, or holds the most tunnels it may")
		sess.Close()
		return
	}
	log.Info("connector tunnel up", "services", routed, "refused", ungranted, "instance", hello.Instance)
	e.announce(sess, e.edgeSet()) // with the edges' ids, which the Welcome lacks; as it is now
	// No goroutine waits for the tunnel's end: the session calls
	// tunnelEnded from its own last goroutine, and e.handlers counts it
	// until then. A tunnel registered after Run's closeTunnels took its
	// list, or while the edge was fenced, is closed here.
	e.handlers.Add(1)
	sess.AfterEnd(func() {
		defer e.handlers.Done()
		e.tunnelEnded(sess, info, log)
	})
	if ctx.Err() != nil || e.Fenced() {
		sess.Shutdown()
	}
}

// tunnelEnded forgets a tunnel that has ended and logs why. It runs in
// the session's last goroutine (see tunnel.Session.AfterEnd).
func (e *Edge) tunnelEnded(sess *tunnel.Session, info *tunnelInfo, log *slog.Logger) {
	e.conns.Lock()
	e.routes.Remove(sess)
	e.removeTunnelLocked(sess)
	e.conns.lastSeen[info.connectorID] = e.now().UTC()
	e.conns.Unlock()
	e.metrics.TunnelDown(info.name)
	upFor := e.now().Sub(info.since).Round(time.Millisecond).String()
	if cause := sess.Cause(); cause != nil {
		// The connector broke the tunnel: it went silent, stopped
		// reading, or flooded the multiplexer.
		log.Warn("connector tunnel down", "up_for", upFor, "cause", cause.Error())
		return
	}
	log.Info("connector tunnel down", "up_for", upFor)
}

// checkHello returns a refusal for a Hello the edge cannot accept.
func checkHello(h wire.Hello) *wire.Refusal {
	if len(h.Services) > maxOffered {
		return &wire.Refusal{Code: wire.CodeBadRequest, Reason: fmt.Sprintf("%d services offered; at most %d", len(h.Services), maxOffered)}
	}
	for _, s := range h.Services {
		if !wire.ValidName(s) {
			return &wire.Refusal{Code: wire.CodeBadRequest, Reason: fmt.Sprintf("bad service name %q", s)}
		}
	}
	return nil
}

// Status reports the edge's tunnels and services for the admin API.
func (e *Edge) Status(ctx context.Context) admin.Status {
	st := admin.Status{EdgeID: e.id, Tunnel: e.tunnelAddr.String(), Advertise: e.advertise, Refusals: e.refusals.Snapshot(),
		Store: e.storeStatus(), Fenced: e.Fenced(), Cluster: e.clusterStatus()}
	counts := map[string]int{}
	for _, c := range e.routes.Count() {
		counts[c.Service] = c.Tunnels
	}
	live := e.current()
	for name, svc := range live.services {
		addr := "-" // no port of its own: reached through shared listeners
		if a := e.listeners.ServiceAddr(name); a != nil {
			addr = a.String()
		}
		st.Services = append(st.Services, admin.ServiceStatus{Name: name, Listen: addr, Tunnels: counts[name],
			Hosts: svc.Hosts, SNI: svc.SNI, Policy: policyStatus(svc.Policy)})
	}
	slices.SortFunc(st.Services, func(a, b admin.ServiceStatus) int { return cmp.Compare(a.Name, b.Name) })
	e.conns.Lock()
	for sess, t := range e.conns.tunnels {
		routed, _ := split(t.offered, e.conns.ids[t.connectorID].Grants)
		st.Connectors = append(st.Connectors, admin.ConnectorStatus{
			ID: t.connectorID, Name: t.name, Remote: t.remote, Transport: t.via, Since: t.since,
			Services: routed, Streams: sess.NumStreams(),
		})
	}
	e.conns.Unlock()
	slices.SortFunc(st.Connectors, func(a, b admin.ConnectorStatus) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Remote, b.Remote))
	})
	return st
}
