// Package join makes a new edge or witness a member of a cluster of
// edges, with a one-time join keyfile made by an edge of it (`sallyport
// edges join-token`): it redeems the keyfile's token at that edge's
// tunnel port and keeps what it gets in the data directory.
//
//	res, err := join.Redeem(ctx, join.Options{Keyfile: "edge-b.join", DataDir: dir,
//		Role: enroll.RoleEdge, Name: "sallyport-" + edgeID, Advertise: "edge-b.example.com:6222"})
//	// dir/pki/ca.crt, ca.key (an edge's only), route.crt, route.key and
//	// dir/cluster.json are written; res.Joined is false if dir had joined
//	// already, which is not an error.
//
// The protocol is in package wire's doc ("Joining the cluster").
package join

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// NamePrefix starts a member's server name: sallyport-<its id>.
const NamePrefix = "sallyport-"

// PKIDir is the directory, inside a data directory, of the CA and the
// route certificate.
const PKIDir = "pki"

// Options say who joins, where, with what.
type Options struct {
	// Keyfile is the path of the join keyfile.
	Keyfile string
	// DataDir is the joiner's data directory; created if missing.
	DataDir string
	// Role is what the caller runs as; the keyfile must be for it.
	Role enroll.Role
	// Name is the joiner's server name, NamePrefix + its id.
	Name string
	// Advertise is the host:port at which the other members reach the
	// joiner's cluster port. Empty with External.
	Advertise string
	// External is set for an edge that keeps its state on an external
	// NATS (store.url): it runs no cluster port, joins edges on that same
	// store, and gets the CA but no routes.
	External bool
	// SameStore, if set, is called once an edge accepted the join,
	// before anything is written, with the keyfile's token id: an edge on
	// an external store checks there that the token is used by it, which
	// proves its store is the answering edge's. Its error ends the join.
	SameStore func(ctx context.Context, tokenID string) error
	// Dial dials an edge's tunnel port; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger; nil means none.
	Logger *slog.Logger
}

// Result is what Redeem did.
type Result struct {
	// Joined is true if Redeem redeemed the keyfile now, false if the
	// data directory had joined this cluster already.
	Joined bool
	// Through is the edge address that answered; empty if not Joined.
	Through string
	// Routes are the cluster addresses to dial, as ClusterFile keeps them.
	Routes []string
}

// attempts bounds the rounds over the keyfile's edges when they cannot
// be reached; a refusal ends the join at once.
const attempts = 3

// dialTimeout bounds one exchange with one edge.
const dialTimeout = 10 * time.Second

// Redeem makes o.DataDir a member of the cluster of o.Keyfile. A data
// directory that has joined that cluster already is left as it is (a
// used keyfile after a successful join is no error); one with a CA of its
// own is refused (pki.ErrOtherCA). Otherwise it sends a new route key's
// CSR with the token to the keyfile's edges, checks the answer against
// the keyfile's CA pin, and writes pki/route.key, route.crt, ca.key (an
// edge's only), ca.crt and cluster.json. Nothing is written unless the
// edge accepted and its answer holds together.
func Redeem(ctx context.Context, o Options) (Result, error) {
	log := o.logger()
	kf, err := enroll.ReadJoinKeyfile(o.Keyfile)
	if err != nil {
		return Result{}, err
	}
	if kf.Role != o.Role {
		return Result{}, fmt.Errorf("join keyfile %s is for a new %s, not a %s: %s", o.Keyfile, kf.Role, o.Role, roleHint(kf.Role))
	}
	if err := checkSelf(o); err != nil {
		return Result{}, err
	}
	pkiDir := filepath.Join(o.DataDir, PKIDir)
	joined, err := pki.JoinState(pkiDir, kf.CAPin, o.Role == enroll.RoleEdge)
	if err != nil {
		return Result{}, fmt.Errorf("join with %s: %w", o.Keyfile, err)
	}
	if joined {
		routes, err := store.ReadClusterFile(filepath.Join(o.DataDir, store.ClusterFile))
		if err != nil {
			return Result{}, err
		}
		log.Info("this data directory joined the cluster already; the join keyfile is not used again", "data", o.DataDir, "ca_pin", kf.CAPin)
		return Result{Routes: routes}, nil
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return Result{}, fmt.Errorf("create data directory: %w", err)
	}
	key, csr, err := pki.NewKeyAndCSR(o.Name)
	if err != nil {
		return Result{}, err
	}
	req := wire.JoinRequest{Token: kf.Token, CSR: csr, Name: o.Name, Advertise: o.Advertise}
	resp, ca, through, err := exchangeAny(ctx, o, kf, req, log)
	if err != nil {
		return Result{}, err
	}
	m, err := member(resp, ca, key, kf, o)
	if err != nil {
		return Result{}, fmt.Errorf("join through edge %s: the answer is unusable: %w", through, err)
	}
	if o.SameStore != nil {
		id, _, _ := enroll.ParseJoinToken(kf.Token) // the edge accepted it: it parses
		if err := o.SameStore(ctx, id); err != nil {
			return Result{}, fmt.Errorf("join through edge %s: %w", through, err)
		}
	}
	if err := store.WriteClusterFile(o.DataDir, resp.Routes); err != nil {
		return Result{}, err
	}
	if err := pki.SaveMember(pkiDir, m); err != nil {
		return Result{}, err
	}
	log.Info("joined the cluster", "role", o.Role, "name", o.Name, "through", through, "routes", resp.Routes, "ca_pin", kf.CAPin)
	return Result{Joined: true, Through: through, Routes: resp.Routes}, nil
}

// roleHint says which command a join keyfile of role is for.
func roleHint(role enroll.Role) string {
	if role == enroll.RoleWitness {
		return "run it with sallyport store --join, or make an edge's keyfile (sallyport edges join-token, without --witness)"
	}
	return "run it with sallyport edge --join, or make a witness's keyfile (sallyport edges join-token --witness)"
}

// checkSelf checks what the joiner says of itself before anything is
// sent.
func checkSelf(o Options) error {
	if !wire.ValidName(o.Name) || len(o.Name) <= len(NamePrefix) || o.Name[:len(NamePrefix)] != NamePrefix {
		return fmt.Errorf("join: bad member name %q: want %s<id>, and %s", o.Name, NamePrefix, wire.NameRule)
	}
	switch {
	case o.External && o.Advertise != "":
		return errors.New("join: an edge on an external NATS (store.url) runs no cluster port: remove cluster.listen and cluster.advertise")
	case o.External:
		return nil
	case o.Advertise == "":
		return errors.New("join: no cluster address to advertise: set cluster.listen (and cluster.advertise, the host:port the other members dial)")
	}
	if err := enroll.ValidateHostPort(o.Advertise); err != nil {
		return fmt.Errorf("join: cluster.advertise: %w", err)
	}
	return nil
}

// exchangeAny tries the keyfile's edges in turn, in up to attempts
// rounds, and returns the first answer, with the CA the edge presented
// and the address that answered. A refusal or a CA that is not the
// pinned one ends it at once.
func exchangeAny(ctx context.Context, o Options, kf enroll.JoinKeyfile, req wire.JoinRequest, log *slog.Logger) (wire.JoinResponse, *x509.Certificate, string, error) {
	var lastErr error
	for round := 0; round < attempts; round++ {
		if round > 0 {
			select {
			case <-time.After(time.Duration(round) * time.Second):
			case <-ctx.Done():
				return wire.JoinResponse{}, nil, "", fmt.Errorf("join not done: %w", lastErr)
			}
		}
		for _, addr := range kf.Edges {
			resp, ca, err := exchange(ctx, o.Dial, addr, kf.CAPin, req)
			if err == nil {
				return resp, ca, addr, nil
			}
			err = fmt.Errorf("join through edge %s: %w", addr, err)
			var ref *wire.Refusal
			var pin *pki.PinMismatchError
			if errors.As(err, &ref) || errors.As(err, &pin) || errors.Is(err, errNoAnswer) {
				return wire.JoinResponse{}, nil, "", err
			}
			log.Warn("join attempt failed", "edge", addr, "err", err)
			lastErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return wire.JoinResponse{}, nil, "", lastErr
}

// errNoAnswer is an edge that read the join request and closed the
// connection without a word: it will do so again, so it is not retried.
var errNoAnswer = errors.New("the edge closed the connection without an answer")

// exchange runs one join exchange with the edge at addr: TLS pinned to
// the keyfile's CA, no client certificate, a JoinRequest, a JoinResponse
// or a Refusal.
func exchange(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr, pin string, req wire.JoinRequest) (wire.JoinResponse, *x509.Certificate, error) {
	var resp wire.JoinResponse
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	raw, err := dial(dctx, "tcp", addr)
	if err != nil {
		return resp, nil, err
	}
	tc := tls.Client(tunnel.NewTransport(raw), pki.EnrollTLSConfig(pin, nil))
	defer tc.Close()
	if err := tc.HandshakeContext(dctx); err != nil {
		return resp, nil, fmt.Errorf("TLS: %w", err)
	}
	ca, err := pki.MatchPinnedCA(tc.ConnectionState().PeerCertificates, pin)
	if err != nil {
		return resp, nil, err
	}
	err = tunnel.Handshake(dctx, tc, dialTimeout, func() error {
		if err := wire.WriteMessage(tc, wire.KindJoinRequest, req); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindJoinResponse, &resp)
	})
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: it may run a sallyport older than this one, which cannot take a join; upgrade it", errNoAnswer)
	}
	return resp, ca, err
}

// member checks an edge's answer against the keyfile and the CA the
// edge's TLS presented, and returns what to save.
func member(resp wire.JoinResponse, tlsCA *x509.Certificate, key *ecdsa.PrivateKey, kf enroll.JoinKeyfile, o Options) (pki.Member, error) {
	ca, err := x509.ParseCertificate(resp.CA)
	if err != nil {
		return pki.Member{}, fmt.Errorf("the CA certificate: %w", err)
	}
	if pin := pki.PinOf(ca); pin != kf.CAPin || !ca.Equal(tlsCA) {
		return pki.Member{}, fmt.Errorf("the CA sent (pin %s) is not the one the keyfile pins (%s)", pin, kf.CAPin)
	}
	m := pki.Member{CA: ca, Route: resp.Certificate, RouteKey: key}
	switch {
	case o.Role == enroll.RoleEdge && len(resp.CAKey) == 0:
		return pki.Member{}, errors.New("no CA key for an edge: an edge must issue connector certificates")
	case o.Role == enroll.RoleEdge:
		m.CAKey = resp.CAKey
	case len(resp.CAKey) > 0:
		// A witness never keeps the CA key, whatever an edge sends.
		o.logger().Warn("the edge sent the CA key to a witness; it is not kept")
	}
	route, err := m.Check()
	if err != nil {
		return pki.Member{}, err
	}
	if route.Subject.CommonName != o.Name {
		return pki.Member{}, fmt.Errorf("the route certificate is for %q, not %q", route.Subject.CommonName, o.Name)
	}
	if err := checkRoutes(resp.Routes, o.External); err != nil {
		return pki.Member{}, err
	}
	return m, nil
}

// checkRoutes checks the routes of an answer: none for an edge on an
// external store (the answering edge shares that store and runs no
// cluster), 1 to wire.MaxRoutes host:port addresses otherwise.
func checkRoutes(routes []string, external bool) error {
	switch {
	case external && len(routes) > 0:
		return fmt.Errorf("%d routes for an edge on an external NATS (store.url): the answering edge runs an embedded cluster, not this store; "+
			"join it with cluster.listen and no store.url, or join an edge that uses the same store.url", len(routes))
	case external:
		return nil
	case len(routes) == 0:
		return errors.New("no routes: the answering edge keeps its state on an external NATS (store.url); " +
			"join it with the same store settings (store.url) and no cluster.listen")
	case len(routes) > wire.MaxRoutes:
		return fmt.Errorf("%d routes: want 1 to %d", len(routes), wire.MaxRoutes)
	}
	for _, r := range routes {
		if err := enroll.ValidateHostPort(r); err != nil {
			return fmt.Errorf("route: %w", err)
		}
	}
	return nil
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}
