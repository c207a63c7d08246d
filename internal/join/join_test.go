package join_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/wire"
)

// The answering edge's cluster addresses, as its config gives them.
const (
	clusterAdvertise = "127.0.0.1:16222"
	joinerAdvertise  = "127.0.0.1:16444"
	joinerName       = "sallyport-edge-0b0b0b0b"
)

// startClusterEdge starts an edge with a cluster port configured (nothing
// listens on it in this branch: the join needs only its addresses).
func startClusterEdge(t *testing.T) *testnet.Edge {
	t.Helper()
	return testnet.StartEdge(t, testnet.EdgeOptions{Tune: withCluster})
}

func withCluster(c *config.Edge) {
	// No route: the edge is a single node (NATS clusters only with one),
	// which answers joins as the first edge of a cluster does.
	c.Cluster = config.Cluster{Listen: "127.0.0.1:0", Advertise: clusterAdvertise}
}

// joinKeyfile asks e's admin API for a join keyfile and writes it to a
// temporary file, whose path it returns with the keyfile.
func joinKeyfile(t *testing.T, e *testnet.Edge, role enroll.Role, ttl time.Duration) (string, enroll.JoinKeyfile) {
	t.Helper()
	b, err := e.AdminClient(t).CreateJoinKeyfile(context.Background(), admin.JoinTokenRequest{Role: string(role), TTL: ttl.String()})
	if err != nil {
		t.Fatalf("create join keyfile: %v", err)
	}
	path := filepath.Join(t.TempDir(), string(role)+".join")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	kf, err := enroll.ReadJoinKeyfile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, kf
}

// writeJoinKeyfile writes kf to a new temporary file.
func writeJoinKeyfile(t *testing.T, kf enroll.JoinKeyfile) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edited.join")
	if err := enroll.WriteJoinKeyfile(path, kf); err != nil {
		t.Fatal(err)
	}
	return path
}

func redeem(keyfile, dir string, role enroll.Role) (join.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return join.Redeem(ctx, join.Options{Keyfile: keyfile, DataDir: dir, Role: role, Name: joinerName, Advertise: joinerAdvertise,
		Dial: freshSource().DialContext})
}

// sources counts the loopback source addresses handed out by freshSource.
var sources atomic.Uint32

// freshSource is a dialer from a loopback address no other join of the
// tests came from: a failed join slows its address down
// (TestJoinFailuresSlowed), and the refusal tests try many in a row.
func freshSource() *net.Dialer {
	n := sources.Add(1)
	ip := net.IPv4(127, 1, byte(n>>8), byte(n))
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
}

// edgeCA loads the CA from e's data directory.
func edgeCA(t *testing.T, e *testnet.Edge) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(e.Cfg.DataDir, "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// tokenState returns the state the admin API lists for token id.
func tokenState(t *testing.T, e *testnet.Edge, id string) admin.Token {
	t.Helper()
	ts, err := e.AdminClient(t).Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range ts {
		if tok.ID == id {
			return tok
		}
	}
	t.Fatalf("token %s not listed", id)
	return admin.Token{}
}

func tokenID(t *testing.T, kf enroll.JoinKeyfile) string {
	t.Helper()
	id, _, err := enroll.ParseJoinToken(kf.Token)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// wantAudit waits for an audit event of action whose subject holds
// subject and whose result starts with result.
func wantAudit(t *testing.T, e *testnet.Edge, action, subject, result string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		err := e.AdminClient(t).Audit(context.Background(), time.Time{}, false, func(ev store.AuditEvent) error {
			if ev.Action == action && strings.Contains(ev.Subject, subject) && strings.HasPrefix(ev.Result, result) {
				found = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event %s %q %q", action, subject, result)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantNothingWritten checks that a refused join left dir without
// certificates or routes.
func wantNothingWritten(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"pki/ca.crt", "pki/ca.key", "pki/route.crt", "pki/route.key", store.ClusterFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s written despite the refusal (stat: %v)", name, err)
		}
	}
}

func TestJoinEdge(t *testing.T) {
	a := startClusterEdge(t)
	path, kf := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)
	if fi, err := os.Stat(path); err != nil || kf.CAPin != edgeCA(t, a).Pin() || kf.Role != enroll.RoleEdge || len(kf.Edges) == 0 {
		t.Fatalf("join keyfile %+v (%v, %v)", kf, fi, err)
	}
	dir := filepath.Join(t.TempDir(), "edge-b")
	res, err := redeem(path, dir, enroll.RoleEdge)
	if err != nil {
		t.Fatal(err)
	}
	// The answering edge's own cluster address, then its routes, never
	// the joiner's own.
	if want := []string{clusterAdvertise}; !res.Joined || !slices.Equal(res.Routes, want) {
		t.Errorf("result %+v, want joined with routes %v", res, want)
	}
	if routes, err := store.ReadClusterFile(filepath.Join(dir, store.ClusterFile)); err != nil || !slices.Equal(routes, res.Routes) {
		t.Errorf("cluster.json routes %v, %v", routes, err)
	}

	// The CA is the answering edge's, key included.
	caA := edgeCA(t, a)
	caB, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !caB.Certificate().Equal(caA.Certificate()) {
		t.Error("the joined CA certificate differs from the edge's")
	}
	keyA, _ := caA.MarshalKey()
	keyB, _ := caB.MarshalKey()
	if !slices.Equal(keyA, keyB) {
		t.Error("the joined CA key differs from the edge's")
	}
	for name, mode := range map[string]os.FileMode{"ca.key": 0o600, "route.key": 0o600, "ca.crt": 0o644, "route.crt": 0o644} {
		if fi, err := os.Stat(filepath.Join(dir, "pki", name)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("pki/%s: %v, %v; want mode %v", name, fi, err, mode)
		}
	}

	// The route certificate is the joiner's, for its advertised host,
	// valid for both ends of a route, and what the cluster code loads.
	route, ca, err := pki.LoadRoute(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatalf("the cluster code cannot load the joined route: %v", err)
	}
	leaf := route.Leaf
	if leaf.Subject.CommonName != joinerName || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || len(leaf.DNSNames) != 0 {
		t.Errorf("route certificate CN %q, IPs %v, DNS %v", leaf.Subject.CommonName, leaf.IPAddresses, leaf.DNSNames)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("route certificate for %v: %v", eku, err)
		}
	}
	// An edge's LoadOrIssueRoute keeps the joined certificate as it is.
	kept, err := pki.LoadOrIssueRoute(filepath.Join(dir, "pki"), caB, joinerName, []string{"127.0.0.1"}, time.Now())
	if err != nil || !kept.Leaf.Equal(leaf) {
		t.Errorf("LoadOrIssueRoute reissued the joined route certificate (%v)", err)
	}
	// And it forms a route with the answering edge's own, over real TLS.
	routeA, err := pki.LoadOrIssueRoute(t.TempDir(), caA, "sallyport-edge-a", []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	routeHandshake(t, pki.RouteTLSConfig(caA.Certificate(), routeA), pki.RouteTLSConfig(ca, route))

	tok := tokenState(t, a, tokenID(t, kf))
	if tok.Kind != store.TokenJoinEdge || tok.State != "used" || tok.UsedBy != joinerName {
		t.Errorf("token listed as %+v", tok)
	}
	wantAudit(t, a, "join-token.create", "for a new edge", "ok")
	wantAudit(t, a, "join", "edge "+joinerName, "ok")

	// The same keyfile again on the joined directory: it just starts.
	if res, err := redeem(path, dir, enroll.RoleEdge); err != nil || res.Joined {
		t.Errorf("re-run after the join: %+v, %v; want not joined again and no error", res, err)
	}
	// On any other directory: already used.
	other := filepath.Join(t.TempDir(), "edge-c")
	_, err = redeem(path, other, enroll.RoleEdge)
	testnet.WantRefusal(t, err, wire.CodeTokenUsed, "already used")
	wantNothingWritten(t, other)
	wantAudit(t, a, "join", "token "+tokenID(t, kf), "refused: token "+tokenID(t, kf)+" was already used")

	// The joined edge runs on that directory with the cluster's CA: the
	// keyfiles it makes pin the same CA as the first edge's.
	b := testnet.StartEdge(t, testnet.EdgeOptions{DataDir: dir})
	ckf, err := enroll.DecodeKeyfile(strings.NewReader(string(b.KeyfileBytes(t, "site-a", time.Hour))))
	if err != nil || ckf.CAPin != caA.Pin() {
		t.Errorf("a keyfile of the joined edge pins %q (%v), want the cluster's %s", ckf.CAPin, err, caA.Pin())
	}
}

// routeHandshake runs a TLS handshake between two route configurations
// over loopback TCP, and fails the test if either side refuses.
func routeHandshake(t *testing.T, server, client *tls.Config) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			_, err = tc.Write([]byte{1}) // the client reads it: the handshake is done on both sides
		}
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1)
	if _, err := tc.Read(buf); err != nil {
		t.Errorf("route handshake, dialling side: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("route handshake, accepting side: %v", err)
	}
}

func TestJoinWitness(t *testing.T) {
	a := startClusterEdge(t)
	path, kf := joinKeyfile(t, a, enroll.RoleWitness, time.Hour)
	if kf.Role != enroll.RoleWitness {
		t.Fatalf("role %q", kf.Role)
	}
	// An edge cannot use a witness's keyfile, nor a witness an edge's:
	// said before anything is sent.
	if _, err := redeem(path, t.TempDir(), enroll.RoleEdge); err == nil || !strings.Contains(err.Error(), "sallyport store --join") {
		t.Errorf("an edge redeeming a witness keyfile: %v", err)
	}
	if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" || tok.Kind != store.TokenJoinWitness {
		t.Errorf("token after a role mismatch: %+v", tok)
	}
	dir := filepath.Join(t.TempDir(), "witness")
	if _, err := redeem(path, dir, enroll.RoleWitness); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pki", "ca.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a witness holds the CA key (stat: %v)", err)
	}
	if _, _, err := pki.LoadRoute(filepath.Join(dir, "pki")); err != nil {
		t.Errorf("the witness's route does not load: %v", err)
	}
	// An edge's start on a witness's directory would make a CA of its
	// own; a join for an edge there is refused.
	epath, _ := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)
	if _, err := redeem(epath, dir, enroll.RoleEdge); err == nil || !strings.Contains(err.Error(), "joined as a witness") {
		t.Errorf("an edge's join on a witness's directory: %v", err)
	}
}
