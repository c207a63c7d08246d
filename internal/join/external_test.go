package join_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/store/storetest"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/wire"
)

// onStore makes an edge keep its state on the external NATS at url, as
// the user of creds if set.
func onStore(url string, creds ...string) func(*config.Edge) {
	return func(c *config.Edge) {
		c.Store.URL = url
		if len(creds) > 0 {
			c.Store.Credentials = creds[0]
		}
	}
}

// edgeUser makes a user of op with the permissions README gives an
// edge's user, and returns its .creds file.
func edgeUser(t *testing.T, op *storetest.Operator, name string) string {
	p := &jwt.Permissions{}
	p.Pub.Allow.Add(store.EdgePermissions.Publish...)
	p.Sub.Allow.Add(store.EdgePermissions.Subscribe...)
	return op.User(t, name, p)
}

// redeemExternal joins as an edge on an external store; with tune (its
// store settings), it checks that store as sallyport edge --join does.
func redeemExternal(keyfile, dir string, tune ...func(*config.Edge)) (join.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := join.Options{Keyfile: keyfile, DataDir: dir, Role: enroll.RoleEdge, Name: joinerName, External: true}
	if len(tune) > 0 {
		c := config.Edge{DataDir: dir}
		tune[0](&c)
		o.SameStore = func(ctx context.Context, id string) error { return edge.SameStore(ctx, c, joinerName, id, nil) }
	}
	return join.Redeem(ctx, o)
}

// Two edges on one external NATS, each its own user with the README's
// permissions: the second joins the first with a join keyfile, without a
// cluster port, gets the CA with its key and no routes, and trusts the
// connectors the first enrolled. Neither is refused a subject.
func TestJoinOnExternalStore(t *testing.T) {
	op := storetest.NewOperator(t)
	url := storetest.StartSecureNATS(t, storetest.NATSOptions{Operator: op})
	echo := testnet.Echo(t)
	a := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}, Tune: onStore(url, edgeUser(t, op, "edge-a"))})
	path, kf := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)

	dir := filepath.Join(t.TempDir(), "edge-b")
	bStore := onStore(url, edgeUser(t, op, "edge-b"))
	res, err := redeemExternal(path, dir, bStore)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Joined || len(res.Routes) != 0 {
		t.Errorf("result %+v, want joined without routes", res)
	}
	caB, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), time.Now())
	if err != nil || !caB.Certificate().Equal(edgeCA(t, a).Certificate()) {
		t.Fatalf("the joined CA is not the first edge's (%v)", err)
	}
	if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "used" || tok.UsedBy != joinerName {
		t.Errorf("token listed as %+v", tok)
	}
	wantAudit(t, a, "join", "edge "+joinerName+" at the external store", "ok")

	b := testnet.StartEdge(t, testnet.EdgeOptions{DataDir: dir, Expose: map[string]string{"echo": ""}, Tune: bStore})
	// A connector enrolled at the first edge, told of both: the second
	// edge's TLS is the cluster CA's and it finds the connector in the
	// shared store, so it takes the tunnel and routes clients through it.
	ckf, err := a.AdminClient(t).CreateKeyfile(context.Background(), admin.TokenRequest{Name: "site-a", TTL: "1h",
		Edges: []string{a.TunnelAddr().String(), b.TunnelAddr().String()}, Services: []string{"echo"}})
	if err != nil {
		t.Fatal(err)
	}
	cpath := filepath.Join(t.TempDir(), "site-a.keyfile")
	if err := os.WriteFile(cpath, ckf, 0o600); err != nil {
		t.Fatal(err)
	}
	c := testnet.StartConnector(t, cpath, testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()},
		Edges: []string{a.TunnelAddr().String(), b.TunnelAddr().String()}}) // both at once, not when the cluster announces b
	c.WaitTunnels(t, 2)
	b.WaitRoutes(t, "echo", 1, 10*time.Second)
	conn := b.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("through the joined edge")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo through the joined edge: %q, %v", got, err)
	}
	wantAudit(t, b, "join", "edge "+joinerName, "ok") // the audit trail is shared
	for _, e := range []*testnet.Edge{a, b} {
		if n := e.Logs.Count("Permissions Violation"); n > 0 {
			t.Errorf("an edge was refused a subject %d times:\n%s", n, strings.Join(e.Logs.Lines("Permissions Violation"), "\n"))
		}
	}
}

// The store decides what a join may be: an edge on an external store
// takes no witness and no joiner with a cluster port, and a joiner on an
// external store is refused by an edge of an embedded cluster. Nothing is
// written and no token is used by any of these. A joiner on another
// store than the answering edge's writes nothing either.
func TestJoinExternalStoreMismatch(t *testing.T) {
	url := storetest.StartNATS(t)
	a := testnet.StartEdge(t, testnet.EdgeOptions{Tune: onStore(url)})
	_, err := a.AdminClient(t).CreateJoinKeyfile(context.Background(), admin.JoinTokenRequest{Role: string(enroll.RoleWitness), TTL: "1h"})
	if err == nil || !strings.Contains(err.Error(), "external NATS (store.url)") {
		t.Errorf("witness keyfile from an edge on an external store: %v", err)
	}

	path, kf := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)
	dir := t.TempDir()
	_, err = redeem(path, dir, enroll.RoleEdge) // a joiner with a cluster port
	testnet.WantRefusal(t, err, wire.CodeBadRequest, "same store settings (store.url")
	wantNothingWritten(t, dir)
	if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
		t.Errorf("token %+v after a refused join", tok)
	}

	// A joiner whose store.url is another NATS: the answering edge takes
	// the join (its token is used), the joiner finds that token missing
	// from its own store and writes nothing.
	_, err = redeemExternal(path, dir, onStore(storetest.StartNATS(t)))
	if err == nil || !strings.Contains(err.Error(), "not the store the answering edge uses") {
		t.Errorf("join with another store: %v", err)
	}
	wantNothingWritten(t, dir)

	c := startClusterEdge(t)
	cpath, ckf := joinKeyfile(t, c, enroll.RoleEdge, time.Hour)
	_, err = redeemExternal(cpath, dir)
	testnet.WantRefusal(t, err, wire.CodeBadRequest, "needs a cluster port")
	wantNothingWritten(t, dir)
	if tok := tokenState(t, c, tokenID(t, ckf)); tok.State != "unused" {
		t.Errorf("token %+v after a refused join", tok)
	}
}

// A joiner on an external store advertises no cluster address, and takes
// no routes: an edge that sends some runs an embedded cluster, not the
// joiner's store.
func TestExternalJoinerTakesNoRoutes(t *testing.T) {
	dir := t.TempDir()
	r, conn, req, done := rogueJoinBy(t, dir, func(path, dir string) (join.Result, error) { return redeemExternal(path, dir) })
	if req.Advertise != "" {
		t.Errorf("a joiner on an external store advertised %q", req.Advertise)
	}
	key, _ := r.CA.MarshalKey()
	resp := wire.JoinResponse{CA: r.CA.Certificate().Raw, CAKey: key, Certificate: routeFor(t, r.CA, req.CSR, req.Name), Routes: []string{"127.0.0.1:1"}}
	if err := wire.WriteMessage(conn, wire.KindJoinResponse, resp); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "1 routes for an edge on an external NATS") {
		t.Fatalf("joiner on an external store took routes: %v", err)
	}
	wantNothingWritten(t, dir)
}
