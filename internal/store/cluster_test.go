package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
)

// member is one cluster member under test: where it listens, its route
// TLS, its data directory, and the store once open.
type member struct {
	name   string
	listen string
	tls    *tls.Config
	dir    string
	log    *slog.Logger // nil: testLogger
	st     *JetStream
}

// newMembers makes n members whose route certificates ca signs, each with
// a free loopback cluster port and its own data directory.
func newMembers(t *testing.T, ca *pki.CA, names ...string) []*member {
	t.Helper()
	ms := make([]*member, len(names))
	for i, n := range names {
		ms[i] = &member{
			name:   n,
			listen: freeAddr(t),
			tls:    pki.RouteTLSConfig(ca.Certificate(), pkitest.Route(t, ca, n)),
			dir:    t.TempDir(),
		}
	}
	return ms
}

func freeAddr(t *testing.T) string { return loopback.FreeAddr(t) }

// options are m's store options with routes to every address in routes
// but its own.
func (m *member) options(t *testing.T, routes []string) Options {
	var rs []string
	for _, r := range routes {
		if r != m.listen {
			rs = append(rs, r)
		}
	}
	log := m.log
	if log == nil {
		log = testLogger(t)
	}
	return Options{
		Dir: m.dir, Name: m.name, Logger: log, ReplicaCheck: 200 * time.Millisecond,
		Cluster: &Cluster{Listen: m.listen, Routes: rs, TLS: m.tls},
	}
}

// openMembers opens every member at once (a member waits for a quorum,
// so they must start together) with routes to each other, and closes them
// when the test ends.
func openMembers(t *testing.T, ms ...*member) {
	t.Helper()
	var addrs []string
	for _, m := range ms {
		addrs = append(addrs, m.listen)
	}
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			m.st, errs[i] = Open(ctx, m.options(t, addrs))
		})
	}
	wg.Wait()
	for _, m := range ms {
		if m.st != nil {
			t.Cleanup(func() { m.st.Close() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond every 50 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// consume redeems token id for by, with a check that refuses a used one.
func consume(ctx context.Context, s Store, id, by string) error {
	_, err := s.ConsumeToken(ctx, id, func(t Token) error {
		if t.Used() {
			return fmt.Errorf("token %s already used by %s", id, t.UsedBy)
		}
		return nil
	}, by, time.Now())
	return err
}

func TestClusterOfThree(t *testing.T) {
	ca := pkitest.NewCA(t)
	ms := newMembers(t, ca, "sallyport-a", "sallyport-b", "sallyport-c")
	openMembers(t, ms...)
	a, b, c := ms[0].st, ms[1].st, ms[2].st
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Every bucket and the audit stream in three copies once the third
	// member is up.
	threeCopies(t, ctx, b)

	// Reads go to each bucket's leader, never to a replica that may lag.
	for _, name := range []string{BucketTokens, BucketConnectors, BucketSessions} {
		st, err := c.js.Stream(ctx, kvStream(name))
		if err != nil {
			t.Fatal(err)
		}
		if st.CachedInfo().Config.AllowDirect {
			t.Errorf("bucket %s answers reads from any replica (allow_direct)", name)
		}
	}

	// A token made through one member is consumed through another, once.
	if err := a.CreateToken(ctx, newToken("t1")); err != nil {
		t.Fatal(err)
	}
	if err := consume(ctx, b, "t1", "conn-b"); err != nil {
		t.Fatalf("first redemption, through b: %v", err)
	}
	if err := consume(ctx, c, "t1", "conn-c"); err == nil || !strings.Contains(err.Error(), "already used by conn-b") {
		t.Fatalf("second redemption, through c: err = %v, want already used by conn-b", err)
	}

	// A watch on one member sees a write made through another in time.
	seen := make(chan Connector, 16)
	stop, err := a.WatchConnectors(ctx, func(cn Connector) { seen <- cn })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := c.PutConnector(ctx, Connector{ID: "c1", Name: "site-c"}); err != nil {
		t.Fatal(err)
	}
	select {
	case cn := <-seen:
		if cn.ID != "c1" {
			t.Fatalf("watch saw %q", cn.ID)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a write through c was not seen by a watch on a within 2s")
	}

	// The audit trail is one, whoever writes it.
	if err := c.Audit(ctx, AuditEvent{Edge: "c", Actor: "test", Action: "token.create", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	var events int
	if err := a.ReadAudit(ctx, time.Time{}, false, func(AuditEvent) error { events++; return nil }); err != nil || events != 1 {
		t.Fatalf("audit read through a: %d events, err %v; want the 1 written through c", events, err)
	}

	// Lose one member (a witness, say): the other two go on writing and
	// redeeming, once any leader it held is re-elected.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a token created through a after c stopped", func() error {
		return a.CreateToken(ctx, newToken("t2"))
	})
	if err := consume(ctx, b, "t2", "conn-b"); err != nil {
		t.Fatalf("redemption through b with c down: %v", err)
	}
	if err := consume(ctx, a, "t2", "conn-a"); err == nil {
		t.Fatal("a second redemption through a with c down succeeded")
	}
}

// TestClusterRefusesStrangers plays two would-be members routing to the
// cluster: one with a route certificate of another CA, one with a
// connector certificate of the cluster's own CA. Neither gets a quorum
// (so neither can read or write the cluster's state), and the cluster does
// not grow; a member with a real route certificate, started the same way,
// joins, and sees the cluster's records.
func TestClusterRefusesStrangers(t *testing.T) {
	ca := pkitest.NewCA(t)
	ms := newMembers(t, ca, "sallyport-a", "sallyport-b", "sallyport-c")
	openMembers(t, ms...)
	a := ms[0].st
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.CreateToken(ctx, newToken("t1")); err != nil {
		t.Fatal(err)
	}
	routes := []string{ms[0].listen, ms[1].listen}

	other := pkitest.NewCA(t)
	conn, _ := pkitest.Connector(t, ca, "site-a", time.Hour)
	conn.Certificate = append(conn.Certificate, ca.Certificate().Raw)
	strangers := map[string]*member{
		"a route certificate of another CA": newMembers(t, other, "sallyport-x")[0],
		"a connector certificate of the CA": {name: "sallyport-z", listen: freeAddr(t), tls: pki.RouteTLSConfig(ca.Certificate(), conn), dir: t.TempDir()},
	}
	var wg sync.WaitGroup
	for what, m := range strangers {
		wg.Go(func() {
			sctx, scancel := context.WithTimeout(ctx, 4*time.Second)
			defer scancel()
			st, err := Open(sctx, m.options(t, routes))
			if err == nil {
				st.Close()
				t.Errorf("a member with %s got a quorum from the cluster", what)
			}
		})
	}
	wg.Wait()
	if st := a.ClusterStatus(); st.Servers != 3 || st.Online != 3 {
		t.Errorf("the cluster sees %d servers (%d online), want 3: a stranger joined", st.Servers, st.Online)
	}

	// The control: a real member started the same way joins.
	d := newMembers(t, ca, "sallyport-d")[0]
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	st, err := Open(dctx, d.options(t, routes))
	if err != nil {
		t.Fatalf("a member with a route certificate of the CA: %v", err)
	}
	defer st.Close()
	if _, err := st.GetToken(ctx, "t1"); err != nil {
		t.Errorf("the new member does not see the cluster's token: %v", err)
	}
	eventually(t, 10*time.Second, "the cluster counts the new member", func() error {
		if n := a.ClusterStatus().Servers; n != 4 {
			return fmt.Errorf("%d servers", n)
		}
		return nil
	})
}

// TestClusterPortWithoutRoutes: a store with a cluster port and no route
// is a single node, as without one: NATS cannot form a JetStream cluster
// of one, so no port is opened and it works as before.
func TestClusterPortWithoutRoutes(t *testing.T) {
	ca := pkitest.NewCA(t)
	m := newMembers(t, ca, "sallyport-a")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Open(ctx, m.options(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if s := st.ClusterStatus(); s.Member {
		t.Error("a store without routes says it is a cluster member")
	}
	if err := st.CreateToken(ctx, newToken("t1")); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", m.listen, time.Second); err == nil {
		c.Close()
		t.Errorf("the cluster port %s is open on a single node", m.listen)
	}
}

// TestSingleNodeBecomesMember: an edge that ran alone and is then given a
// route keeps its records (NATS alone would delete them as orphans); once
// adopted, it cannot silently go back to its stale single-node files.
func TestSingleNodeBecomesMember(t *testing.T) {
	ca := pkitest.NewCA(t)
	ms := newMembers(t, ca, "sallyport-a", "sallyport-b", "sallyport-c")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	single, err := Open(ctx, Options{Dir: ms[0].dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := single.CreateToken(ctx, newToken("old")); err != nil {
		t.Fatal(err)
	}
	if err := single.PutConnector(ctx, Connector{ID: "c1", Name: "site-a"}); err != nil {
		t.Fatal(err)
	}
	if err := single.Audit(ctx, AuditEvent{Edge: "a", Actor: "test", Action: "enroll", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := single.Close(); err != nil {
		t.Fatal(err)
	}

	openMembers(t, ms...)
	c := ms[2].st
	tok, err := c.GetToken(ctx, "old")
	if err != nil || tok.Name != "site-old" {
		t.Fatalf("the single node's token through c: %+v, %v", tok, err)
	}
	if _, err := c.GetConnector(ctx, "c1"); err != nil {
		t.Fatalf("the single node's connector through c: %v", err)
	}
	var actions []string
	if err := c.ReadAudit(ctx, time.Time{}, false, func(ev AuditEvent) error { actions = append(actions, ev.Action); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(actions) != 1 || actions[0] != "enroll" {
		t.Fatalf("audit through c: %v, want the single node's one enroll", actions)
	}

	// Back to a single node: refused, with what to do.
	if err := ms[0].st.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, Options{Dir: ms[0].dir, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "cluster member") || !strings.Contains(err.Error(), "routes") {
		t.Fatalf("a member reopened without routes: err = %v, want a refusal that names the routes", err)
	}
}

func TestReadClusterFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ClusterFile)
	if rs, err := ReadClusterFile(path); err != nil || rs != nil {
		t.Fatalf("missing file: %v, %v; want none and no error", rs, err)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"routes": ["10.0.0.1:6222", "edge2.example.com:6222"], "members": 3}`, ""},
		{`{"routes": ["10.0.0.1"]}`, "routes[0]"},
		{`["10.0.0.1:6222"]`, "should be {\"routes\""},
	} {
		if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		rs, err := ReadClusterFile(path)
		switch {
		case tc.want == "" && (err != nil || len(rs) != 2):
			t.Errorf("%s: %v, %v", tc.body, rs, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path)):
			t.Errorf("%s: err = %v, want one naming %s and the file", tc.body, err, tc.want)
		}
	}
	if err := os.WriteFile(path, []byte(`{"routes": ["10.0.0.1:6222", "edge2.example.com:6222"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := Routes([]string{"edge2.example.com:6222", "10.9.9.9:6222"}, dir)
	if err != nil || strings.Join(rs, ",") != "edge2.example.com:6222,10.9.9.9:6222,10.0.0.1:6222" {
		t.Errorf("Routes = %v, %v; want the configured ones then the file's new ones", rs, err)
	}
}

// TestExternalClusterGetsThreeReplicas: on an external NATS cluster of
// three servers (plain, as an operator may run it), the store's buckets and
// audit stream end up in three copies too.
func TestExternalClusterGetsThreeReplicas(t *testing.T) {
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	var urls []string
	var wg sync.WaitGroup
	for i := range addrs {
		host, port, _ := strings.Cut(addrs[i], ":")
		var routes []*url.URL
		for j, a := range addrs {
			if j != i {
				routes = append(routes, &url.URL{Scheme: "nats-route", Host: a})
			}
		}
		var p int
		fmt.Sscan(port, &p)
		srv, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "ops", Host: host, Port: p}, Routes: routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		wg.Go(func() {
			if !srv.ReadyForConnections(10 * time.Second) {
				t.Error("external NATS did not start")
			}
		})
		urls = append(urls, srv.ClientURL())
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Opened at once: the servers may still be electing their leader,
	// which the store waits for.
	st, err := Open(ctx, Options{URL: strings.Join(urls, ","), Logger: testLogger(t), ReplicaCheck: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	threeCopies(t, ctx, st)
}

// A member alone waits for its cluster; stopped meanwhile (SIGTERM), Open
// returns the cancellation at once, so the process exits as asked.
func TestMemberStoppedWhileWaiting(t *testing.T) {
	ca := pkitest.NewCA(t)
	m := newMembers(t, ca, "sallyport-a")[0]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		st, err := Open(ctx, m.options(t, []string{freeAddr(t)}))
		if err == nil {
			st.Close()
		}
		done <- err
	}()
	cancel() // before or while it waits: either way it must give up at once
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Open stopped with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Open still waits for a quorum 5s after it was stopped")
	}
}

// The last member of a cluster that lost its quorum stops at once, its
// watch included, even while the watch is replacing a consumer that lived
// on a member now gone (the library's ordered consumer hung here).
func TestLastMemberStopsWithoutQuorum(t *testing.T) {
	ca := pkitest.NewCA(t)
	ms := newMembers(t, ca, "sallyport-a", "sallyport-b", "sallyport-c")
	logs := &logbuf.Buffer{}
	ms[2].log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	openMembers(t, ms...)
	c := ms[2].st
	stop, err := c.WatchConnectors(context.Background(), func(Connector) {})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:2] {
		if err := m.st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Give the watch the time to find its consumer gone, if it lived on a
	// or b (about two heartbeats); if it lived on c, nothing is logged.
	deadline := time.Now().Add(3 * time.Second)
	for logs.Count("watch interrupted") == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	began := time.Now()
	stop()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("the last member took %v to stop its watch and close", d)
	}
}

// TestQuorum: a member hears a quorum while two of three are up
// (whatever is being elected), and not once it is alone.
func TestQuorum(t *testing.T) {
	ms := newMembers(t, pkitest.NewCA(t), "sallyport-q0", "sallyport-q1", "sallyport-q2")
	openMembers(t, ms...)
	hears := func(want bool) {
		t.Helper()
		eventually(t, 15*time.Second, fmt.Sprintf("hears a quorum: %v", want), func() error {
			if member, got := ms[0].st.Quorum(1500 * time.Millisecond); !member || got != want {
				return fmt.Errorf("Quorum = member %v, hears %v", member, got)
			}
			return nil
		})
	}
	hears(true)
	ms[2].st.Close()
	hears(true)
	ms[1].st.Close()
	hears(false)
}

// threeCopies waits (bounded) until st's buckets and audit stream each
// have three current copies.
func threeCopies(t *testing.T, ctx context.Context, st *JetStream) {
	t.Helper()
	eventually(t, 20*time.Second, "three copies of every stream", func() error {
		reps, err := st.StreamReplicas(ctx)
		if err != nil {
			return err
		}
		for name, n := range reps {
			if n != 3 {
				return fmt.Errorf("%s has %d current copies", name, n)
			}
		}
		return nil
	})
}
