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
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
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
	return join.Redeem(ctx, join.Options{Keyfile: keyfile, DataDir: dir, Role: role, Name: joinerName, Advertise: joinerAdvertise})
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

// rawJoin sends req to the edge at addr as a joiner would, presenting
// clientCert if not nil, and returns the answer.
func rawJoin(t *testing.T, addr, pin string, req any, clientCert *tls.Certificate) (wire.JoinResponse, error) {
	t.Helper()
	var resp wire.JoinResponse
	conf := pki.EnrollTLSConfig(pin, nil)
	if clientCert != nil {
		conf.Certificates = []tls.Certificate{*clientCert}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, conf)
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	err = tunnel.Handshake(ctx, tc, 10*time.Second, func() error {
		if b, ok := req.([]byte); ok { // raw bytes, written as they are
			_, err := tc.Write(b)
			if err != nil {
				return err
			}
		} else if err := wire.WriteMessage(tc, wire.KindJoinRequest, req); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindJoinResponse, &resp)
	})
	return resp, err
}

func newCSR(t *testing.T) []byte {
	t.Helper()
	_, csr, err := pki.NewKeyAndCSR("x")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// The attacker's cases: each is refused with a clear reason, changes
// nothing, and is audited.
func TestJoinRefusals(t *testing.T) {
	a := startClusterEdge(t)
	addr := a.TunnelAddr().String()
	pin := edgeCA(t, a).Pin()

	t.Run("witness token never gets the CA key", func(t *testing.T) {
		_, kf := joinKeyfile(t, a, enroll.RoleWitness, time.Hour)
		resp, err := rawJoin(t, addr, pin, wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: joinerName, Advertise: joinerAdvertise}, nil)
		if err != nil || len(resp.CAKey) != 0 || len(resp.CA) == 0 || len(resp.Certificate) == 0 {
			t.Fatalf("witness join: %v, CA key %d bytes", err, len(resp.CAKey))
		}
		// A witness keyfile relabelled as an edge's gets no key either:
		// the edge goes by the stored token, and the joiner keeps nothing.
		_, kf = joinKeyfile(t, a, enroll.RoleWitness, time.Hour)
		kf.Role = enroll.RoleEdge
		dir := t.TempDir()
		if _, err := redeem(writeJoinKeyfile(t, kf), dir, enroll.RoleEdge); err == nil || !strings.Contains(err.Error(), "no CA key for an edge") {
			t.Fatalf("relabelled witness keyfile: %v", err)
		}
		wantNothingWritten(t, dir)
	})

	good := func(t *testing.T) (string, enroll.JoinKeyfile) { return joinKeyfile(t, a, enroll.RoleEdge, time.Hour) }
	cases := []struct {
		name  string
		edit  func(t *testing.T, kf *enroll.JoinKeyfile)
		code  wire.Code
		text  string
		audit string // the audit subject, when the token is real
	}{
		{"forged token", func(t *testing.T, kf *enroll.JoinKeyfile) {
			forged, _ := enroll.NewToken()
			kf.Token = forged.JoinString()
		}, wire.CodeTokenUnknown, "never issued token", ""},
		{"tampered secret", func(t *testing.T, kf *enroll.JoinKeyfile) {
			other, _ := enroll.NewToken()
			kf.Token = enroll.Token{ID: tokenID(t, *kf), Secret: other.Secret}.JoinString()
		}, wire.CodeTokenMismatch, "does not match", "token"},
		{"connector enrollment token", func(t *testing.T, kf *enroll.JoinKeyfile) {
			ckf, err := enroll.DecodeKeyfile(strings.NewReader(string(a.KeyfileBytes(t, "site-x", time.Hour))))
			if err != nil {
				t.Fatal(err)
			}
			id, secret, _ := enroll.ParseToken(ckf.Token)
			kf.Token = enroll.Token{ID: id, Secret: secret}.JoinString()
		}, wire.CodeTokenKind, "is a connector's enrollment token", "token"},
		{"revoked", func(t *testing.T, kf *enroll.JoinKeyfile) {
			if _, err := a.AdminClient(t).RevokeToken(context.Background(), tokenID(t, *kf)); err != nil {
				t.Fatal(err)
			}
		}, wire.CodeRevoked, "revoked", "token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, kf := good(t)
			tc.edit(t, &kf)
			dir := t.TempDir()
			_, err := redeem(writeJoinKeyfile(t, kf), dir, enroll.RoleEdge)
			testnet.WantRefusal(t, err, tc.code, tc.text)
			wantNothingWritten(t, dir)
			id := tokenID(t, kf)
			if tc.audit != "" {
				if tok := tokenState(t, a, id); tok.State == "used" {
					t.Errorf("token used by a refused join: %+v", tok)
				}
			}
			wantAudit(t, a, "join", "token "+id, "refused: ")
		})
	}

	t.Run("expired", func(t *testing.T) {
		path, kf := joinKeyfile(t, a, enroll.RoleEdge, 50*time.Millisecond)
		for !time.Now().After(kf.Expires) {
			time.Sleep(10 * time.Millisecond) // until the clock passes the expiry
		}
		dir := t.TempDir()
		_, err := redeem(path, dir, enroll.RoleEdge)
		testnet.WantRefusal(t, err, wire.CodeTokenExpired, "expired")
		wantNothingWritten(t, dir)
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "expired" {
			t.Errorf("token %+v", tok)
		}
	})

	t.Run("join token used to enroll a connector", func(t *testing.T) {
		_, kf := good(t)
		id, secret, _ := enroll.ParseJoinToken(kf.Token)
		ckf := enroll.Keyfile{Name: "site-y", Edges: []string{addr}, CAPin: pin, Token: enroll.Token{ID: id, Secret: secret}.String(), Expires: kf.Expires}
		path := filepath.Join(t.TempDir(), "site-y.keyfile")
		if err := enroll.WriteKeyfile(path, ckf); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "connector")
		c := testnet.StartConnector(t, path, testnet.ConnectorOptions{DataDir: dir, Services: map[string]string{"x": "127.0.0.1:1"}})
		err := c.Done(t, 20*time.Second)
		testnet.WantRefusal(t, err, wire.CodeTokenKind, "is a join token")
		if _, err := os.Stat(filepath.Join(dir, pki.ConnectorCertFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a connector certificate was issued for a join token (stat: %v)", err)
		}
		if tok := tokenState(t, a, id); tok.State != "unused" {
			t.Errorf("token %+v", tok)
		}
		wantAudit(t, a, "enroll", "token "+id, "refused: ")
	})

	t.Run("connector certificate", func(t *testing.T) {
		_, kf := good(t)
		cert, _ := pkitestConnector(t, edgeCA(t, a))
		_, err := rawJoin(t, addr, pin, wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: joinerName, Advertise: joinerAdvertise}, &cert)
		testnet.WantRefusal(t, err, wire.CodeBadRequest, "a connector cannot join")
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
			t.Errorf("token %+v", tok)
		}
		wantAudit(t, a, "join", "", "refused: a join request comes from a new member")
	})

	t.Run("malformed requests", func(t *testing.T) {
		_, kf := good(t)
		for _, bad := range []struct {
			req  any
			text string
		}{
			{map[string]any{"token": kf.Token, "csr": newCSR(t), "name": joinerName, "advertise": joinerAdvertise, "ca_key": "please"}, "unknown field"},
			{wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: "edge-b", Advertise: joinerAdvertise}, "bad member name"},
			{wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: joinerName, Advertise: "edge-b"}, "bad cluster advertise"},
			{wire.JoinRequest{Token: kf.Token, CSR: []byte("not a CSR"), Name: joinerName, Advertise: joinerAdvertise}, "certificate request refused"},
			{wire.JoinRequest{Token: "sp1.x.y", Name: joinerName, Advertise: joinerAdvertise}, "malformed join token"},
		} {
			_, err := rawJoin(t, addr, pin, bad.req, nil)
			var ref *wire.Refusal
			if !errors.As(err, &ref) || !strings.Contains(ref.Reason, bad.text) {
				t.Errorf("request %v: %v; want a refusal saying %q", bad.req, err, bad.text)
			}
		}
		// Larger than a handshake message may be: the edge closes.
		huge := append([]byte{byte(wire.KindJoinRequest), 0, 1, 0, 1}, make([]byte, 100)...)
		if _, err := rawJoin(t, addr, pin, huge, nil); err == nil || errors.As(err, new(*wire.Refusal)) {
			t.Errorf("an oversized join request: %v; want the connection closed", err)
		}
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
			t.Errorf("token after malformed requests: %+v", tok)
		}
	})

	t.Run("wrong CA pin", func(t *testing.T) {
		_, kf := good(t)
		kf.CAPin = pkitestCA(t).Pin()
		dir := t.TempDir()
		_, err := redeem(writeJoinKeyfile(t, kf), dir, enroll.RoleEdge)
		var pm *pki.PinMismatchError
		if !errors.As(err, &pm) {
			t.Fatalf("join with another CA's pin: %v", err)
		}
		wantNothingWritten(t, dir)
	})

	t.Run("data directory with a CA of its own", func(t *testing.T) {
		path, kf := good(t)
		dir := t.TempDir()
		own, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = redeem(path, dir, enroll.RoleEdge)
		if !errors.Is(err, pki.ErrOtherCA) || !strings.Contains(err.Error(), "would replace it") {
			t.Fatalf("join over another CA: %v", err)
		}
		still, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), time.Now())
		if err != nil || still.Pin() != own.Pin() {
			t.Errorf("the directory's own CA changed (%v)", err)
		}
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
			t.Errorf("token %+v", tok)
		}
	})
}

// An edge that runs no cluster port makes no join keyfile, and refuses a
// join keyfile it made while it had one.
func TestJoinNeedsClusterPort(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "edge-a")
	a := testnet.StartEdge(t, testnet.EdgeOptions{DataDir: dataDir, Tune: withCluster})
	path, kf := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	a = testnet.StartEdge(t, testnet.EdgeOptions{DataDir: dataDir, TunnelListen: kf.Edges[0]})
	_, err := a.AdminClient(t).CreateJoinKeyfile(context.Background(), admin.JoinTokenRequest{})
	if err == nil || !strings.Contains(err.Error(), "runs no cluster port") {
		t.Errorf("join keyfile from an edge without a cluster port: %v", err)
	}
	dir := t.TempDir()
	_, err = redeem(path, dir, enroll.RoleEdge)
	testnet.WantRefusal(t, err, wire.CodeNoCluster, "runs no cluster port")
	wantNothingWritten(t, dir)
	if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
		t.Errorf("token %+v", tok)
	}
}

// Failed joins that come too fast make the edge refuse every join for a
// while, the good ones too, and then let them through again.
func TestJoinFailuresSlowed(t *testing.T) {
	a := startClusterEdge(t)
	addr := a.TunnelAddr().String()
	pin := edgeCA(t, a).Pin()
	forged, _ := enroll.NewToken()
	busy := false
	for i := 0; i < 30 && !busy; i++ {
		_, err := rawJoin(t, addr, pin, wire.JoinRequest{Token: forged.JoinString(), CSR: newCSR(t), Name: joinerName, Advertise: joinerAdvertise}, nil)
		var ref *wire.Refusal
		if !errors.As(err, &ref) {
			t.Fatalf("forged join: %v", err)
		}
		busy = ref.Code == wire.CodeBusy
	}
	if !busy {
		t.Fatal("30 forged joins in a row and the edge never slowed them down")
	}
	path, _ := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)
	_, err := redeem(path, t.TempDir(), enroll.RoleEdge)
	testnet.WantRefusal(t, err, wire.CodeBusy, "try again in a few seconds")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := redeem(path, t.TempDir(), enroll.RoleEdge)
		if err == nil {
			break
		}
		var ref *wire.Refusal
		if !errors.As(err, &ref) || ref.Code != wire.CodeBusy || time.Now().After(deadline) {
			t.Fatalf("a good join after the flood: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pkitestCA(t *testing.T) *pki.CA { return pkitest.NewCA(t) }

func pkitestConnector(t *testing.T, ca *pki.CA) (tls.Certificate, string) {
	return pkitest.Connector(t, ca, "site-a", time.Hour)
}

// rogueJoin makes a join keyfile pinned to a rogue edge's CA, runs the
// joiner against it in the background, and returns the rogue, the
// connection it accepted after the join request was read, the request,
// and the channel of the joiner's result.
func rogueJoin(t *testing.T, dir string) (*testnet.RogueEdge, *tls.Conn, wire.JoinRequest, <-chan error) {
	t.Helper()
	return rogueJoinBy(t, dir, func(path, dir string) (join.Result, error) { return redeem(path, dir, enroll.RoleEdge) })
}

// rogueJoinBy is rogueJoin with the joiner's redeem.
func rogueJoinBy(t *testing.T, dir string, redeem func(path, dir string) (join.Result, error)) (*testnet.RogueEdge, *tls.Conn, wire.JoinRequest, <-chan error) {
	t.Helper()
	r := testnet.StartRogueEdge(t)
	forged, _ := enroll.NewToken()
	path := writeJoinKeyfile(t, enroll.JoinKeyfile{Role: enroll.RoleEdge, Edges: []string{r.Addr()}, CAPin: r.CA.Pin(),
		Token: forged.JoinString(), Expires: time.Now().Add(time.Hour)})
	done := make(chan error, 1)
	go func() {
		_, err := redeem(path, dir)
		done <- err
	}()
	tc := r.AcceptTLS(t)
	kind, body, err := tunnel.ReadOpening(context.Background(), tc, tunnel.Config{})
	if err != nil || kind != wire.KindJoinRequest {
		t.Fatalf("rogue edge: opening %v, %v", kind, err)
	}
	var req wire.JoinRequest
	if err := wire.Decode(kind, body, &req); err != nil {
		t.Fatal(err)
	}
	return r, tc, req, done
}

// An edge that predates joins reads the request's kind as malformed and
// closes: the joiner says so, once, and writes nothing.
func TestJoinAtAnOlderEdge(t *testing.T) {
	dir := t.TempDir()
	_, tc, _, done := rogueJoin(t, dir)
	tc.Close() // what an older edge does with an unknown message kind
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "older than this one") {
		t.Fatalf("join at an older edge: %v", err)
	}
	wantNothingWritten(t, dir)
}

// A joiner keeps nothing of an answer that does not hold together, even
// from an edge of the pinned CA.
func TestJoinerChecksTheAnswer(t *testing.T) {
	other := pkitest.NewCA(t)
	for _, tc := range []struct {
		name string
		edit func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse)
		text string
	}{
		{"route certificate for another key", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Certificate = routeFor(t, r.CA, newCSR(t), req.Name)
		}, "not for this member's key"},
		{"another CA's key", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.CAKey, _ = other.MarshalKey()
		}, "does not belong to the CA certificate"},
		{"a CA other than the pinned one", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.CA = other.Certificate().Raw
		}, "not the one the keyfile pins"},
		{"another name", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Certificate = routeFor(t, r.CA, req.CSR, "sallyport-edge-ffffffff")
		}, `is for "sallyport-edge-ffffffff"`},
		{"no routes", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Routes = nil
		}, "no routes: the answering edge keeps its state on an external NATS"},
		{"a bad route", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Routes = []string{"nats://x:1"}
		}, "route:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r, conn, req, done := rogueJoin(t, dir)
			key, _ := r.CA.MarshalKey()
			resp := wire.JoinResponse{CA: r.CA.Certificate().Raw, CAKey: key, Certificate: routeFor(t, r.CA, req.CSR, req.Name), Routes: []string{"127.0.0.1:1"}}
			tc.edit(r, req, &resp)
			if err := wire.WriteMessage(conn, wire.KindJoinResponse, resp); err != nil {
				t.Fatal(err)
			}
			err := <-done
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("joiner took a bad answer: %v; want it to say %q", err, tc.text)
			}
			wantNothingWritten(t, dir)
		})
	}
}

// routeFor signs a route certificate for csr as an edge would.
func routeFor(t *testing.T, ca *pki.CA, csr []byte, name string) []byte {
	t.Helper()
	der, err := ca.SignRoute(csr, name, []string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
