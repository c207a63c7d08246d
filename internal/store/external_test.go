package store

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/sallyport/sallyport/internal/store/storetest"
)

// openExternal opens a store on the external NATS at url with opts'
// security settings, and closes it when the test ends.
func openExternal(t *testing.T, url string, opts Options) (*JetStream, error) {
	t.Helper()
	opts.URL, opts.Logger = url, testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Open(ctx, opts)
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// wantWorks opens a store with opts and checks that a token written
// through it reads back.
func wantWorks(t *testing.T, url string, opts Options) {
	t.Helper()
	s, err := openExternal(t, url, opts)
	if err != nil {
		t.Fatalf("open with %+v: %v", opts, err)
	}
	ctx := context.Background()
	if err := s.CreateToken(ctx, newToken("t1")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetToken(ctx, "t1"); err != nil || got.ID != "t1" {
		t.Fatalf("token read back as %+v, %v", got, err)
	}
}

// wantRefused opens a store with opts and wants a refusal that says all
// of says (the setting to fix).
func wantRefused(t *testing.T, url string, opts Options, says ...string) {
	t.Helper()
	_, err := openExternal(t, url, opts)
	if err == nil {
		t.Fatalf("open with %+v: no error", opts)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("open with %+v: %q; want it to say %q", opts, err, s)
		}
	}
}

// A NATS server with a certificate of a private CA: the edge trusts it
// with store.ca only, and says so when it lacks it or has another.
func TestExternalTLS(t *testing.T) {
	f := storetest.NewTLSFiles(t)
	url := storetest.StartSecureNATS(t, storetest.NATSOptions{TLS: &f})
	wantWorks(t, url, Options{CAFile: f.CA})
	wantRefused(t, url, Options{}, "signed by a CA this host does not trust", "set store.ca")
	other := storetest.NewTLSFiles(t)
	wantRefused(t, url, Options{CAFile: other.CA}, "not signed by the CA in store.ca ("+other.CA+")")
	// The certificate is for 127.0.0.1, not for the name "localhost".
	wantRefused(t, strings.Replace(url, "127.0.0.1", "localhost", 1), Options{CAFile: f.CA}, "not for the host in store.url")
}

// A NATS server that requires client certificates (tls verify): the edge
// connects with store.cert and store.key of the CA it trusts, and is told
// which setting to fix without them or with another CA's.
func TestExternalMutualTLS(t *testing.T) {
	f := storetest.NewTLSFiles(t)
	url := storetest.StartSecureNATS(t, storetest.NATSOptions{TLS: &f, Verify: true})
	wantWorks(t, url, Options{CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey})
	wantRefused(t, url, Options{CAFile: f.CA}, "set store.cert and store.key")
	other := storetest.NewTLSFiles(t)
	wantRefused(t, url, Options{CAFile: f.CA, CertFile: other.ClientCert, KeyFile: other.ClientKey},
		"refused the client certificate in store.cert ("+other.ClientCert+")")
}

// A NATS server in operator (JWT) mode: the edge connects as the user of
// store.credentials; without one, or with a user of another operator, it
// is told what to check.
func TestExternalCredentials(t *testing.T) {
	op := storetest.NewOperator(t)
	url := storetest.StartSecureNATS(t, storetest.NATSOptions{Operator: op})
	wantWorks(t, url, Options{CredsFile: op.User(t, "edge", nil)})
	wantRefused(t, url, Options{}, "requires a user", "set store.credentials")
	stranger := storetest.NewOperator(t).User(t, "edge", nil)
	wantRefused(t, url, Options{CredsFile: stranger}, "refused the user in store.credentials ("+stranger+")")
}

// edgeUser is the permission set the README gives operators, less the
// subjects drop leaves out.
func edgeUser(drop ...string) *jwt.Permissions {
	p := &jwt.Permissions{}
	for _, s := range EdgePermissions.Publish {
		if !strings.Contains(strings.Join(drop, " "), s) {
			p.Pub.Allow.Add(s)
		}
	}
	p.Sub.Allow.Add(EdgePermissions.Subscribe...)
	return p
}

// An edge's user with EdgePermissions and no more does all a store does
// (tokens, connectors and their watch, sessions, presence, the audit
// trail); one without its bucket's subjects is refused and told the set.
// TestJoinOnExternalStore runs whole edges with it too.
func TestExternalPermissions(t *testing.T) {
	op := storetest.NewOperator(t)
	url := storetest.StartSecureNATS(t, storetest.NATSOptions{Operator: op})
	s, err := openExternal(t, url, Options{CredsFile: op.User(t, "edge", edgeUser())})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now().UTC()
	if err := s.CreateToken(ctx, newToken("t1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeToken(ctx, "t1", func(Token) error { return nil }, "site-a", now); err != nil {
		t.Fatal(err)
	}
	if ts, err := s.ListTokens(ctx); err != nil || len(ts) != 1 {
		t.Fatalf("tokens %v, %v", ts, err)
	}
	seen := make(chan Connector, 4)
	stop, err := s.WatchConnectors(ctx, func(c Connector) { seen <- c })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := s.PutConnector(ctx, Connector{ID: "c1", Name: "site-a"}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-seen:
		if c.ID != "c1" {
			t.Errorf("watch saw %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connectors watch saw nothing")
	}
	if err := s.CreateSession(ctx, Session{ID: "s1", SecretHash: make([]byte, 32), Service: "db", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPresence(ctx, EdgePresence{ID: "edge-1", Addresses: []string{"127.0.0.1:5500"}, Started: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, AuditEvent{Action: "test", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.ReadAudit(ctx, time.Time{}, false, func(AuditEvent) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("audit read %d events, %v", n, err)
	}

	// A user without JetStream's API cannot open the store, and is told
	// the set it needs.
	wantRefused(t, url, Options{CredsFile: op.User(t, "no-api", edgeUser("$JS.API.>"))},
		"refused the edge's user a subject", `Publish to "$JS.API.`, "$JS.API.>", "$KV."+BucketSessions+".>")
	// One without a bucket's subject opens it (it exists) and cannot
	// write there.
	// write there; the edge's log says what to grant.
	logs := &lockedWriter{w: &strings.Builder{}}
	short, err := Open(ctx, Options{URL: url, CredsFile: op.User(t, "no-sessions", edgeUser("$KV."+BucketSessions+".>")),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := short.CreateSession(wctx, Session{ID: "s2", SecretHash: make([]byte, 32), Service: "db", ExpiresAt: now.Add(time.Hour)}); err == nil {
		t.Error("a session was created by a user without the sessions bucket's subject")
	}
	short.Close()
	if l := logs.String(); !strings.Contains(l, "refused this edge's user a subject") || !strings.Contains(l, "$KV."+BucketSessions+".") {
		t.Errorf("the log does not say which permission is missing:\n%s", l)
	}
}

// lockedWriter serializes writes to w (the NATS client logs from its own
// goroutines).
type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
