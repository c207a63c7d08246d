package testnet_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/testnet"
	"golang.org/x/net/proxy"
)

// routes returns how many tunnels the edge routes service through now.
func routes(e *testnet.Edge, service string) int {
	for _, s := range e.Status(context.Background()).Services {
		if s.Name == service {
			return s.Tunnels
		}
	}
	return 0
}

// reply dials service and returns what its back-end answers to a
// half-closed "hello" (Digest back-ends name themselves in their reply).
func reply(t *testing.T, e *testnet.Edge, service string) string {
	t.Helper()
	c := e.Dial(t, service)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%s: %v", service, err)
	}
	if len(b) < 32 {
		return ""
	}
	return string(b[32:])
}

// A connector that offers a service it was not granted gets none of its
// clients, however many tunnels it holds; the refusal names the command
// that would grant it, on both sides, once. A grant at run time makes it
// serve without a reconnect; an ungrant drops it at once.
func TestUngrantedServiceGetsNoClient(t *testing.T) {
	legit := testnet.Digest(t, []byte("legit"))
	rogue := testnet.Digest(t, []byte("rogue"))
	wiki := testnet.Digest(t, []byte("wiki"))
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"db": "", "wiki": ""}})
	a := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "db"), testnet.ConnectorOptions{
		Services: map[string]string{"db": legit.Addr()}})
	// site-b is granted wiki only, and offers db too, from 8 tunnels.
	b := testnet.StartConnector(t, e.Keyfile(t, "site-b", time.Hour, "wiki"), testnet.ConnectorOptions{
		Services: map[string]string{"db": rogue.Addr(), "wiki": wiki.Addr()}, Pool: 8})
	a.WaitTunnels(t, 1)
	b.WaitTunnels(t, 8)
	e.WaitRoutes(t, "wiki", 8, 10*time.Second) // all of site-b's tunnels are in
	e.WaitRoutes(t, "db", 1, 10*time.Second)
	if n := routes(e, "db"); n != 1 {
		t.Fatalf("db is routed through %d tunnels, want 1 (site-a's)", n)
	}
	for range 20 {
		if got := reply(t, e, "db"); got != "legit" {
			t.Fatalf("a db client reached %q, want only the granted connector's back-end", got)
		}
	}
	if rogue.Accepted() != 0 {
		t.Fatalf("the ungranted connector's back-end got %d connections", rogue.Accepted())
	}
	if got := reply(t, e, "wiki"); got != "wiki" {
		t.Fatalf("site-b's granted service: %q", got)
	}
	const cmd = "sallyport connectors grant site-b db"
	if n := e.Logs.Count("not granted", cmd); n != 1 {
		t.Errorf("the edge said %d times that site-b offers db ungranted, naming %q; want once:\n%s", n, cmd, e.Logs.Tail(30))
	}
	if n := b.Logs.Count("refuses a service", cmd); n != 1 {
		t.Errorf("site-b's log says %d times that db is refused with %q; want once:\n%s", n, cmd, b.Logs.Tail(30))
	}

	ac := e.AdminClient(t)
	ups := e.Logs.Count("connector tunnel up")
	if _, err := ac.Grant(context.Background(), "site-b", "db", true); err != nil {
		t.Fatal(err)
	}
	if n := routes(e, "db"); n != 9 {
		t.Fatalf("after the grant db is routed through %d tunnels, want 9 at once", n)
	}
	seen := map[string]bool{}
	for i := 0; i < 200 && !seen["rogue"]; i++ {
		seen[reply(t, e, "db")] = true
	}
	if !seen["rogue"] {
		t.Error("after the grant no db client reached site-b's back-end")
	}
	if n := e.Logs.Count("connector tunnel up"); n != ups {
		t.Errorf("the grant took %d new tunnels; it must apply to the live ones", n-ups)
	}

	if _, err := ac.Grant(context.Background(), "site-b", "db", false); err != nil {
		t.Fatal(err)
	}
	if n := routes(e, "db"); n != 1 {
		t.Fatalf("after the ungrant db is routed through %d tunnels, want 1 at once", n)
	}
	before := rogue.Accepted()
	for range 20 {
		if got := reply(t, e, "db"); got != "legit" {
			t.Fatalf("after the ungrant a db client reached %q", got)
		}
	}
	if rogue.Accepted() != before {
		t.Error("after the ungrant site-b's back-end still got clients")
	}
}

// A token without grants grants nothing: the connector's services are all
// refused, and the refusal says how to grant them.
func TestTokenWithoutGrantsGrantsNothing(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()}})
	c.WaitTunnels(t, 1)
	c.Logs.WaitFor(t, 10*time.Second, 1, "refuses a service", "sallyport connectors grant site-a echo")
	if n := routes(e, "echo"); n != 0 {
		t.Fatalf("echo routed through %d tunnels of a connector granted nothing", n)
	}
	conn := e.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("a client of an ungranted service read %d bytes, %v; want the connection closed", n, err)
	}
}

// Revoking a connector ends its live transfer within a second; its
// reconnects are refused, and it stops with a message that says so.
func TestRevokeEndsLiveTunnelsAndRefusesTheConnector(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()}})
	c.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)

	conn := e.Dial(t, "echo")
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	ended := make(chan time.Time, 1)
	go func() {
		io.Copy(io.Discard, conn)
		ended <- time.Now()
	}()
	written := make(chan struct{})
	go func() {
		defer close(written)
		chunk := make([]byte, 16<<10)
		for {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	echo.WaitOpen(t, 1, 10*time.Second)

	got, err := e.AdminClient(t).RevokeConnector(context.Background(), "site-a")
	if err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	if got.RevokedAt.IsZero() {
		t.Fatalf("revoke answered %+v, without the time", got)
	}
	select {
	case at := <-ended:
		if d := at.Sub(revoked); d > time.Second {
			t.Errorf("the live transfer ended %v after the revocation, want within a second", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the live transfer went on 5s after the revocation")
	}
	conn.Close()
	<-written
	if n := routes(e, "echo"); n != 0 {
		t.Errorf("echo still routed through %d tunnels of a revoked connector", n)
	}
	err = c.Done(t, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "revoked at") || !strings.Contains(err.Error(), "ask for a new keyfile") {
		t.Fatalf("the revoked connector stopped with %v; want the edge's reason", err)
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "tunnel refused: connector revoked")
	if _, err := e.AdminClient(t).Grant(context.Background(), "site-a", "echo", true); err == nil {
		t.Error("a revoked connector was granted a service")
	}
}

// A revoked token's keyfile enrolls nothing; a used token cannot be
// revoked (the connector is what to revoke then).
func TestTokenRevoke(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	path := e.Keyfile(t, "site-a", time.Hour, "echo")
	kf, err := enroll.ReadKeyfile(path)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := enroll.ParseToken(kf.Token)
	if err != nil {
		t.Fatal(err)
	}
	ac := e.AdminClient(t)
	if tok, err := ac.RevokeToken(context.Background(), id); err != nil || tok.State != "revoked" {
		t.Fatalf("revoke token: %+v, %v", tok, err)
	}
	c := testnet.StartConnector(t, path, testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	err = c.Done(t, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("enrolling with a revoked token: %v; want a refusal that says it was revoked", err)
	}
	cs, err := ac.Connectors(context.Background())
	if err != nil || len(cs) != 0 {
		t.Fatalf("connectors after a refused enrollment: %+v, %v", cs, err)
	}

	used := e.Keyfile(t, "site-b", time.Hour, "echo")
	good := testnet.StartConnector(t, used, testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	good.WaitTunnels(t, 1)
	kf, _ = enroll.ReadKeyfile(used)
	id, _, _ = enroll.ParseToken(kf.Token)
	if _, err := ac.RevokeToken(context.Background(), id); err == nil || !strings.Contains(err.Error(), "connectors revoke") {
		t.Errorf("revoking a used token: %v; want a refusal that points at connectors revoke", err)
	}
}

// A name belongs to one connector: a keyfile for an enrolled name is
// refused unless --replace, and redeeming a replacing keyfile revokes the
// connector it replaces.
func TestNameBelongsToOneConnector(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	old := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), testnet.ConnectorOptions{
		Services: map[string]string{"echo": echo.Addr()}})
	old.WaitTunnels(t, 1)

	ac := e.AdminClient(t)
	_, err := ac.CreateKeyfile(context.Background(), adminTokenRequest("site-a", false))
	if err == nil || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("a second keyfile for an enrolled name: %v; want a refusal that names --replace", err)
	}
	kf, err := ac.CreateKeyfile(context.Background(), adminTokenRequest("site-a", true))
	if err != nil {
		t.Fatal(err)
	}
	path := writeTemp(t, "site-a.keyfile", kf)
	replacement := testnet.StartConnector(t, path, testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	replacement.WaitTunnels(t, 1)
	if err := old.Done(t, 20*time.Second); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the replaced connector stopped with %v; want revoked", err)
	}
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	cs, err := ac.Connectors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, c := range cs {
		if c.RevokedAt.IsZero() {
			live++
		}
	}
	if len(cs) != 2 || live != 1 {
		t.Fatalf("connectors after a replacement: %+v; want the old one revoked and the new one live", cs)
	}
}

// One identity holds at most tunnel.pool's maximum of tunnels per edge,
// however many processes share its key.
func TestTunnelsPerIdentityAreBounded(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	dir := t.TempDir()
	opts := testnet.ConnectorOptions{DataDir: dir, Services: map[string]string{"echo": echo.Addr()}, Pool: 16}
	first := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), opts)
	first.WaitTunnels(t, 16)
	e.WaitRoutes(t, "echo", 16, 10*time.Second)
	mark := e.Logs.Mark()
	second := testnet.StartConnector(t, "", opts) // the same identity, from the same files
	e.Logs.WaitForSince(t, mark, 10*time.Second, 1, "the most tunnels one identity may hold")
	if n := routes(e, "echo"); n != 16 {
		t.Fatalf("echo routed through %d tunnels of one identity, want at most 16", n)
	}
	if second.Tunnels() != 0 {
		t.Errorf("the second process of the identity holds %d tunnels", second.Tunnels())
	}
}

func adminTokenRequest(name string, replace bool) admin.TokenRequest {
	return admin.TokenRequest{Name: name, TTL: "1h", Services: []string{"echo"}, Replace: replace}
}

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A SOCKS client that names a back-end address reaches it only through a
// connector granted the service its allow-list serves that address as:
// an ungranted connector's answer is not used, and no client byte reaches
// its back-end.
func TestSOCKSAddressNeedsAGrant(t *testing.T) {
	var got atomic.Int64
	target := testnet.Serve(t, func(c *net.TCPConn) {
		n, _ := io.Copy(c, c)
		got.Add(n)
	})
	other := testnet.Echo(t)
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindSOCKS5}}, map[string]config.EdgeService{"db": {}, "other": {}})
	// The connector serves the target's address as db, but is granted
	// only other.
	testnet.StartConnector(t, e.keyfile(t, "other"), testnet.ConnectorOptions{
		Services: map[string]string{"db": target.Addr(), "other": other.Addr()}})
	e.waitRoutes(t, "other", 1)
	d, err := proxy.SOCKS5("tcp", e.addr(0), nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := d.Dial("tcp", target.Addr()); err == nil || !strings.Contains(err.Error(), "not allowed by ruleset") {
		if c != nil {
			c.Write([]byte("secret"))
			c.Close()
		}
		t.Fatalf("SOCKS5 CONNECT to an address only an ungranted service holds: %v; want refused", err)
	}
	if got.Load() != 0 {
		t.Fatalf("the ungranted back-end got %d client bytes", got.Load())
	}

	token, _ := e.AdminToken()
	ac := &admin.Client{Addr: e.AdminAddr().String(), Token: token}
	if _, err := ac.Grant(context.Background(), "site", "db", true); err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", target.Addr())
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT after the grant: %v", err)
	}
	if b := roundTrip(t, c.(*net.TCPConn), []byte("granted")); string(b) != "granted" {
		t.Errorf("after the grant: %q", b)
	}
	c.Close()
}
