package edge

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/sallyport/sallyport/internal/openings"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

const (
	// MaxJoinTTL bounds a join token's lifetime: for an edge it buys the
	// CA's key, so it lives hours, not the days an enrollment may.
	MaxJoinTTL = 24 * time.Hour
	// routeCertTTL is how long a route certificate issued at a join is
	// valid.
	routeCertTTL = 365 * 24 * time.Hour
)

// tokenKindOf is the store's token kind for a join role.
func tokenKindOf(role enroll.Role) string {
	if role == enroll.RoleWitness {
		return store.TokenJoinWitness
	}
	return store.TokenJoinEdge
}

// CreateJoinKeyfile makes a one-time join token valid for ttl for a new
// edge or witness (req.Role), stores its hash, and returns the join
// keyfile that carries it. It refuses when this edge runs no cluster port
// and no external store: a joiner needs a member to route to, or the
// external NATS (store.url) to share. Edges on an external store have no
// witnesses: a witness is a member of an embedded cluster.
func (e *Edge) CreateJoinKeyfile(ctx context.Context, req admin.JoinTokenRequest, ttl time.Duration) ([]byte, error) {
	role := enroll.Role(req.Role)
	if role == "" {
		role = enroll.RoleEdge
	}
	if !role.Valid() {
		return nil, &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("bad role %q: a join keyfile is for an %q or a %q", req.Role, enroll.RoleEdge, enroll.RoleWitness)}
	}
	if ttl <= 0 || ttl > MaxJoinTTL {
		return nil, &admin.Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("ttl %s out of range: a join keyfile lives up to %s", ttl, MaxJoinTTL)}
	}
	if reason := e.cannotTake(role); reason != "" {
		e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "join-token.create", Subject: "for a new " + string(role), Result: "refused: " + reason})
		return nil, &admin.Error{Status: http.StatusConflict, Message: reason}
	}
	edges := req.Edges
	if len(edges) == 0 {
		edges = tcpAddresses(e.advertise)
	}
	tok, err := enroll.NewToken()
	if err != nil {
		return nil, err
	}
	now := e.now().UTC()
	t := store.Token{ID: tok.ID, SecretHash: enroll.HashSecret(tok.Secret), Kind: tokenKindOf(role), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	kf := enroll.JoinKeyfile{Version: enroll.JoinKeyfileVersion, Role: role, Edges: edges, CAPin: e.ca.Pin(), Token: tok.JoinString(), Expires: t.ExpiresAt}
	b, err := kf.Encode() // validates: nothing is stored for a keyfile that cannot be made
	if err != nil {
		return nil, &admin.Error{Status: http.StatusBadRequest, Message: err.Error() + " (a join keyfile needs host:port tunnel addresses: set tunnel.advertise, or give --edge)"}
	}
	if err := e.st.CreateToken(ctx, t); err != nil {
		return nil, fmt.Errorf("store the new token: %w", err)
	}
	e.log.Info("join token created", "token", tok.ID, "role", role, "expires", t.ExpiresAt)
	e.audit(store.AuditEvent{Actor: admin.Actor(ctx), Action: "join-token.create", Subject: "token " + tok.ID + " for a new " + string(role), Result: "ok",
		Detail: "expires " + t.ExpiresAt.Format(time.RFC3339)})
	return b, nil
}

// noClusterReason says why an edge without a cluster port cannot take a
// new member.
const noClusterReason = "this edge runs no cluster port (cluster.listen), so a new member would have nothing to route to: " +
	"set cluster.listen (and cluster.advertise) in its config, restart it, and make a new join keyfile"

// noWitnessReason says why an edge on an external store takes no witness.
const noWitnessReason = "this edge keeps its state on an external NATS (store.url): a witness is a member of a cluster of embedded NATS servers, " +
	"which edges on an external NATS do not run; make an edge's join keyfile instead (without --witness)"

// cannotTake says why this edge cannot take a new member of role, or ""
// when it can: a cluster member (cluster.listen) takes edges and
// witnesses, an edge on an external store (store.url) takes edges, which
// then share that store; a single edge takes none.
func (e *Edge) cannotTake(role enroll.Role) string {
	switch {
	case e.cfg.Store.URL != "" && role == enroll.RoleWitness:
		return noWitnessReason
	case e.cfg.Store.URL == "" && e.cfg.Cluster.Listen == "":
		return noClusterReason
	}
	return ""
}

// tcpAddresses keeps the host:port addresses of addrs (a joiner dials the
// tunnel port over TCP, never through a WebSocket).
func tcpAddresses(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if enroll.ValidateHostPort(a) == nil {
			out = append(out, a)
		}
	}
	return out
}

// serveJoin redeems a join request: it checks the connection and the
// token, signs the joiner's route certificate, consumes the token by
// compare-and-swap, and only then sends the CA (with its key, for an
// edge) and the routes. Any refusal changes nothing. It closes tc.
func (e *Edge) serveJoin(ctx context.Context, tc *tls.Conn, body []byte, log *slog.Logger) {
	defer tc.Close()
	actor := "joiner at " + tc.RemoteAddr().String()
	ip := openings.RemoteIP(tc)
	if wait := e.joinFailures.Wait(ip, time.Now()); wait > 0 {
		log.Warn("join refused: too many failed join attempts from this address of late")
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeBusy, Reason: fmt.Sprintf(
			"too many failed join attempts from your address of late: try again in %s", wait.Round(time.Millisecond))})
		return
	}
	resp, ref, subject, advertise := e.join(ctx, tc.ConnectionState(), body)
	if ref != nil {
		if !ref.Temporary() { // an edge that cannot decide is not the joiner's failure
			e.joinFailures.Failed(ip, time.Now())
		}
		log.Warn("join refused", "code", ref.Code.String(), "reason", ref.Reason)
		e.auditRefusal(store.AuditEvent{Actor: actor, Action: "join", Subject: subject, Result: "refused: " + ref.Reason})
		tunnel.Refuse(tc, ref)
		return
	}
	e.joinFailures.Succeeded(ip)
	detail := "routes " + strings.Join(resp.Routes, ",")
	if e.cfg.Store.URL != "" {
		detail = "on the external store"
	}
	e.audit(store.AuditEvent{Actor: actor, Action: "join", Subject: subject, Result: "ok", Detail: detail})
	tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := wire.WriteMessage(tc, wire.KindJoinResponse, resp); err != nil {
		log.Warn("join response not delivered; the joiner needs a new join keyfile", "subject", subject, "err", err)
		return
	}
	log.Info("cluster member joined", "subject", subject)
	if e.cfg.Store.URL == "" {
		e.memberJoined(ctx, advertise)
	}
}

// join redeems a join request that came on a connection in state cs;
// subject names the token and the joiner, for the audit trail; advertise
// is the joiner's cluster address once it is accepted.
func (e *Edge) join(ctx context.Context, cs tls.ConnectionState, body []byte) (_ wire.JoinResponse, _ *wire.Refusal, subject, advertise string) {
	subject = "a join request"
	if len(cs.PeerCertificates) > 0 {
		c := cs.PeerCertificates[0]
		return wire.JoinResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: fmt.Sprintf(
			"a join request comes from a new member, without a client certificate; this connection presented %q (id %s): a connector cannot join the cluster",
			c.Subject.CommonName, pki.ConnectorID(c))}, subject, ""
	}
	var req wire.JoinRequest
	if err := wire.Decode(wire.KindJoinRequest, body, &req); err != nil {
		return wire.JoinResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: err.Error()}, subject, ""
	}
	id, secret, err := enroll.ParseJoinToken(req.Token)
	if err != nil {
		return wire.JoinResponse{}, &wire.Refusal{Code: wire.CodeTokenMalformed, Reason: err.Error() + "; the join keyfile is damaged: make a new one"}, subject, ""
	}
	subject = "token " + id
	external := e.cfg.Store.URL != ""
	if ref := checkJoiner(req, external); ref != nil {
		return wire.JoinResponse{}, ref, subject, ""
	}
	subject = fmt.Sprintf("%s at %s (token %s)", req.Name, cmp.Or(req.Advertise, "the external store"), id)
	if !external && e.cfg.Cluster.Listen == "" {
		return wire.JoinResponse{}, &wire.Refusal{Code: wire.CodeNoCluster, Reason: noClusterReason}, subject, ""
	}
	now := e.now().UTC()
	check := func(t store.Token) error {
		if r := checkJoinToken(t, secret, now); r != nil {
			return r
		}
		return nil
	}
	t, err := e.st.GetToken(ctx, id)
	if err != nil {
		return wire.JoinResponse{}, tokenStoreRefusal(id, err), subject, ""
	}
	if err := check(t); err != nil {
		return wire.JoinResponse{}, err.(*wire.Refusal), subject, ""
	}
	role := enroll.RoleEdge
	if t.Kind == store.TokenJoinWitness {
		role = enroll.RoleWitness
	}
	subject = fmt.Sprintf("%s %s at %s (token %s)", role, req.Name, cmp.Or(req.Advertise, "the external store"), id)
	if external && role == enroll.RoleWitness {
		return wire.JoinResponse{}, &wire.Refusal{Code: wire.CodeNoCluster, Reason: noWitnessReason}, subject, ""
	}
	var hosts []string // an edge on the external store routes nowhere: its certificate names no host
	if !external {
		host, _, _ := net.SplitHostPort(req.Advertise)
		hosts = []string{host}
	}
	certDER, err := e.ca.SignRoute(req.CSR, req.Name, hosts, now, routeCertTTL)
	if err != nil {
		return wire.JoinResponse{}, &wire.Refusal{Code: wire.CodeBadRequest, Reason: "certificate request refused: " + err.Error()}, subject, ""
	}
	resp := wire.JoinResponse{CA: e.ca.Certificate().Raw, Certificate: certDER}
	if !external {
		resp.Routes = e.clusterRoutes(req.Advertise)
	}
	if role == enroll.RoleEdge {
		if resp.CAKey, err = e.ca.MarshalKey(); err != nil {
			return wire.JoinResponse{}, &wire.Refusal{Code: wire.CodeInternal, Reason: "the edge cannot read its CA key; tell its operator"}, subject, ""
		}
	}
	if _, err := e.st.ConsumeToken(ctx, id, check, req.Name, now); err != nil {
		var ref *wire.Refusal
		if errors.As(err, &ref) {
			return wire.JoinResponse{}, ref, subject, ""
		}
		return wire.JoinResponse{}, tokenStoreRefusal(id, err), subject, ""
	}
	return resp, nil, subject, req.Advertise
}

// storeOptions are the store settings of an edge's config c.
func storeOptions(c config.Edge, log *slog.Logger) store.Options {
	return store.Options{Dir: filepath.Join(c.DataDir, "nats"), Logger: log,
		URL: c.Store.URL, CAFile: c.Store.CA, CertFile: c.Store.Cert, KeyFile: c.Store.Key, CredsFile: c.Store.Credentials,
		AuditRetention: c.Audit.Retention, Replicas: c.Store.Replicas}
}

// SameStore checks, for a joining edge of config c on an external store
// (store.url) named name, that its store holds join token tokenID as used
// by it: the answering edge consumed it in its own store, so it is there
// only if both edges use one store. An edge that joined with another
// store.url would run with the CA and know none of the connectors.
func SameStore(ctx context.Context, c config.Edge, name, tokenID string, log *slog.Logger) error {
	st, err := store.Open(ctx, storeOptions(c, log))
	if err != nil {
		return err
	}
	defer st.Close()
	t, err := st.GetToken(ctx, tokenID)
	if err == nil && t.UsedBy == name {
		return nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("check that this edge's store is the answering edge's: %w", err)
	}
	return fmt.Errorf("the answering edge took the join, but the store at store.url %s does not show join token %s used by this edge: "+
		"it is not the store the answering edge uses; give this edge the same store section as the other edges, and make a new join keyfile (this one is used)",
		c.Store.URL, tokenID)
}

// checkJoiner checks what a join request says of the joiner. At an edge
// on an external store (external) the joiner runs no cluster port and
// advertises none; elsewhere it must advertise one.
func checkJoiner(req wire.JoinRequest, external bool) *wire.Refusal {
	rest, ok := strings.CutPrefix(req.Name, join.NamePrefix)
	if !ok || rest == "" || !wire.ValidName(req.Name) {
		return &wire.Refusal{Code: wire.CodeBadRequest, Reason: fmt.Sprintf("bad member name %q: want %s<its id>, and %s", req.Name, join.NamePrefix, wire.NameRule)}
	}
	switch {
	case external && req.Advertise != "":
		return &wire.Refusal{Code: wire.CodeBadRequest, Reason: "this edge keeps its state on an external NATS (store.url) and has no cluster to route to: " +
			"give the joining edge the same store settings (store.url, and its credentials) instead of a cluster port"}
	case external:
		return nil
	case req.Advertise == "":
		return &wire.Refusal{Code: wire.CodeBadRequest, Reason: "this edge runs an embedded NATS cluster, not an external store: " +
			"the joining edge needs a cluster port (cluster.listen, cluster.advertise) and no store.url"}
	}
	if err := enroll.ValidateHostPort(req.Advertise); err != nil {
		return &wire.Refusal{Code: wire.CodeBadRequest, Reason: "bad cluster advertise address: " + err.Error()}
	}
	return nil
}

// checkJoinToken is the join redemption policy: the token's own checks
// (checkToken) for a join token of either role.
func checkJoinToken(t store.Token, secret string, now time.Time) *wire.Refusal {
	return checkToken(t, secret, now, store.TokenJoinEdge, store.TokenJoinWitness)
}

// clusterRoutes are the cluster addresses a joiner at advertise should
// dial: this edge's own, its configured routes and those a join gave it,
// once each, without the joiner's own, at most wire.MaxRoutes.
func (e *Edge) clusterRoutes(advertise string) []string {
	routes := []string{ClusterAdvertise(e.cfg.Cluster, net.InterfaceAddrs)}
	routes = append(routes, e.cfg.Cluster.Routes...)
	if joined, err := store.ReadClusterFile(filepath.Join(e.cfg.DataDir, store.ClusterFile)); err != nil {
		e.log.Warn("join: the routes of this edge's own join are not passed on", "err", err)
	} else {
		routes = append(routes, joined...)
	}
	var out []string
	for _, r := range routes {
		if r != "" && r != advertise && !slices.Contains(out, r) && len(out) < wire.MaxRoutes {
			out = append(out, r)
		}
	}
	return out
}

// ClusterAdvertise is the host:port at which the other members reach this
// member's cluster port: cluster.advertise, or else derived from
// cluster.listen as tunnel.advertise is (see advertised; ifaceAddrs lists
// this host's addresses). Empty when the cluster has no port.
func ClusterAdvertise(cl config.Cluster, ifaceAddrs func() ([]net.Addr, error)) string {
	if cl.Advertise != "" || cl.Listen == "" {
		return cl.Advertise
	}
	host, port, err := net.SplitHostPort(cl.Listen)
	if err != nil {
		return cl.Listen
	}
	ip := net.ParseIP(host)
	if host == "" {
		ip = net.IPv4zero
	}
	p, err := strconv.Atoi(port)
	if ip == nil || err != nil {
		return cl.Listen // a host name: the operator's choice
	}
	addrs, _ := advertised(nil, &net.TCPAddr{IP: ip, Port: p}, ifaceAddrs)
	return addrs[0]
}
