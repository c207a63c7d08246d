// Package testnet runs real edges, connectors and back-ends inside a test
// process, on loopback, with real TLS and the real embedded store, and
// stops every one of them when the test ends.
//
//	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
//	c := testnet.StartConnector(t, e.Keyfile(t, "site"), testnet.ConnectorOptions{
//		Services: map[string]string{"echo": testnet.Echo(t)}})
//	c.WaitTunnels(t, 1)
//	conn := e.Dial(t, "echo")
package testnet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/connector"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/logbuf"
	"github.com/sallyport/sallyport/internal/wire"
)

func newLogger(t testing.TB, role string, logs *logbuf.Buffer) *slog.Logger {
	w := io.Writer(logs)
	if os.Getenv("SALLYPORT_TEST_LOG") != "" {
		w = io.MultiWriter(logs, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("role", role)
}

// EdgeOptions configure StartEdge.
type EdgeOptions struct {
	// Expose maps service name → listen address ("" means 127.0.0.1:0).
	Expose map[string]string
	// DataDir to use; empty means a new temporary directory.
	DataDir string
	// TunnelListen; empty means 127.0.0.1:0.
	TunnelListen string
	// Advertise overrides the addresses written into keyfiles.
	Advertise []string
	// Keepalive settings; zero means 200ms interval, 1s timeout.
	KeepaliveInterval, KeepaliveTimeout time.Duration
	// DrainTimeout; zero means 2s.
	DrainTimeout time.Duration
	// Tune, if set, changes the config last.
	Tune func(*config.Edge)
	// CertificateTTL is the connector certificates' lifetime; zero means
	// the default (7 days).
	CertificateTTL time.Duration
}

// Edge is a running edge.
type Edge struct {
	*edge.Edge
	Cfg  config.Edge
	Logs *logbuf.Buffer

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// StartEdge starts an edge and waits until it listens. It is stopped when
// the test ends, if the test has not stopped it already.
func StartEdge(t testing.TB, o EdgeOptions) *Edge {
	t.Helper()
	return StartEdges(t, o)[0]
}

// StartEdges starts one edge per options at once and waits until every
// one listens: edges whose embedded stores form a cluster start only
// together, once a quorum of them is up.
func StartEdges(t testing.TB, os ...EdgeOptions) []*Edge {
	t.Helper()
	es := make([]*Edge, len(os))
	for i, o := range os {
		es[i] = launchEdge(t, o)
	}
	for _, e := range es {
		e.waitReady(t)
	}
	return es
}

// launchEdge starts an edge's Run and returns without waiting for it.
func launchEdge(t testing.TB, o EdgeOptions) *Edge {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = filepath.Join(t.TempDir(), "edge")
	}
	cfg := config.Edge{
		DataDir: o.DataDir,
		Tunnel: config.EdgeTunnel{
			Listen:            or(o.TunnelListen, "127.0.0.1:0"),
			Advertise:         o.Advertise,
			KeepaliveInterval: orDur(o.KeepaliveInterval, 200*time.Millisecond),
			KeepaliveTimeout:  orDur(o.KeepaliveTimeout, time.Second),
		},
		Admin:        config.Admin{Listen: "127.0.0.1:0"},
		DrainTimeout: orDur(o.DrainTimeout, 2*time.Second),
		Services:     map[string]config.EdgeService{},

		ConnectorCertificateTTL: o.CertificateTTL,
	}
	for name, addr := range o.Expose {
		cfg.Services[name] = config.EdgeService{Listen: or(addr, "127.0.0.1:0")}
	}
	if o.Tune != nil {
		o.Tune(&cfg)
	}
	logs := &logbuf.Buffer{}
	e, err := edge.New(cfg, newLogger(t, "edge", logs))
	if err != nil {
		t.Fatalf("edge.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	te := &Edge{Edge: e, Cfg: cfg, Logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { te.done <- e.Run(ctx) }()
	t.Cleanup(func() {
		te.Stop()
		logTail(t, "edge", logs)
	})
	return te
}

// logTail puts the last lines of a failed test's role's log, the store's
// own chatter left out, into the test's output.
func logTail(t testing.TB, role string, logs *logbuf.Buffer) {
	if !t.Failed() {
		return
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	lines = slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, "component=nats") })
	t.Logf("--- %s log, last lines:\n%s", role, strings.Join(lines[max(0, len(lines)-40):], "\n"))
}

// waitReady waits until the edge listens, failing the test if its Run
// ends or 20s pass first.
func (e *Edge) waitReady(t testing.TB) {
	t.Helper()
	select {
	case <-e.Ready():
	case err := <-e.done:
		e.done <- err
		t.Fatalf("edge did not start: %v\nlogs:\n%s", err, e.Logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("edge did not start within 20s\nlogs:\n%s", e.Logs)
	}
}

// Stop stops the edge (gracefully: drain, then close) and returns Run's error.
func (e *Edge) Stop() error {
	e.once.Do(func() {
		e.cancel()
		e.err = <-e.done
	})
	return e.err
}

// Keyfile asks the edge's admin API for a keyfile and writes it to a
// temporary file, whose path it returns.
func (e *Edge) Keyfile(t testing.TB, name string, ttl time.Duration, grants ...string) string {
	t.Helper()
	kf := e.KeyfileBytes(t, name, ttl, grants...)
	path := filepath.Join(t.TempDir(), name+".keyfile")
	if err := os.WriteFile(path, kf, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// KeyfileBytes asks the edge's admin API for a keyfile that grants the
// connector grants.
func (e *Edge) KeyfileBytes(t testing.TB, name string, ttl time.Duration, grants ...string) []byte {
	t.Helper()
	c := e.AdminClient(t)
	if ttl == 0 {
		ttl = time.Hour
	}
	kf, err := c.CreateKeyfile(context.Background(), admin.TokenRequest{Name: name, TTL: ttl.String(), Services: grants})
	if err != nil {
		t.Fatalf("create keyfile: %v", err)
	}
	return kf
}

// AdminClient returns a client of the edge's admin API.
func (e *Edge) AdminClient(t testing.TB) *admin.Client {
	t.Helper()
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	return &admin.Client{Addr: e.AdminAddr().String(), Token: token}
}

// Dial connects to a service's public listener, as a client would.
func (e *Edge) Dial(t testing.TB, service string) *net.TCPConn {
	t.Helper()
	addr := e.ServiceAddr(service)
	if addr == nil {
		t.Fatalf("edge exposes no service %q", service)
	}
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial service %s: %v", service, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// WaitRoutes waits until n tunnels offer service at the edge.
func (e *Edge) WaitRoutes(t testing.TB, service string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := 0
		for _, s := range e.Status(context.Background()).Services {
			if s.Name == service {
				got = s.Tunnels
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s: %d tunnels at the edge after %s, want %d", service, got, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ConnectorOptions configure StartConnector.
type ConnectorOptions struct {
	// Services maps service name → back-end address: the allow-list.
	Services map[string]string
	// DataDir; empty means a new temporary directory.
	DataDir string
	// Edges overrides the keyfile's edge addresses.
	Edges []string
	// Keepalive settings; zero means 200ms interval, 1s timeout.
	KeepaliveInterval, KeepaliveTimeout time.Duration
	// Backoff; zero means 50ms to 500ms.
	BackoffMin, BackoffMax time.Duration
	// Pool is the number of tunnels to each edge; zero means 1.
	Pool int
	// Tune, if set, changes the config last.
	Tune func(*config.Connector)
}

// Connector is a running connector.
type Connector struct {
	*connector.Connector
	Cfg  config.Connector
	Logs *logbuf.Buffer

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// ConnectorConfig builds the config StartConnector uses.
func ConnectorConfig(t testing.TB, keyfile string, o ConnectorOptions) config.Connector {
	if o.DataDir == "" {
		o.DataDir = filepath.Join(t.TempDir(), "connector")
	}
	cfg := config.Connector{
		Keyfile: keyfile,
		DataDir: o.DataDir,
		Edges:   o.Edges,
		Tunnel: config.ConnectorTunnel{
			KeepaliveInterval: orDur(o.KeepaliveInterval, 200*time.Millisecond),
			KeepaliveTimeout:  orDur(o.KeepaliveTimeout, time.Second),
			DialTimeout:       5 * time.Second,
			BackoffMin:        orDur(o.BackoffMin, 50*time.Millisecond),
			BackoffMax:        orDur(o.BackoffMax, 500*time.Millisecond),
			Pool:              o.Pool,
		},
		DrainTimeout: 2 * time.Second,
		Services:     map[string]config.ConnectorService{},
	}
	for name, addr := range o.Services {
		cfg.Services[name] = config.ConnectorService{Address: addr}
	}
	if o.Tune != nil {
		o.Tune(&cfg)
	}
	return cfg
}

// StartConnector starts a connector; it does not wait for its tunnels
// (see WaitTunnels). It is stopped when the test ends.
func StartConnector(t testing.TB, keyfile string, o ConnectorOptions) *Connector {
	t.Helper()
	cfg := ConnectorConfig(t, keyfile, o)
	logs := &logbuf.Buffer{}
	c, err := connector.New(cfg, newLogger(t, "connector", logs))
	if err != nil {
		t.Fatalf("connector.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &Connector{Connector: c, Cfg: cfg, Logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { tc.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		tc.Stop()
		logTail(t, "connector", logs)
	})
	return tc
}

// WaitTunnels waits until n tunnels are up, failing the test if the
// connector stops or 20s pass first.
func (c *Connector) WaitTunnels(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- c.Connector.WaitTunnels(ctx, n) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("connector: %d tunnels up, want %d: %v\nlogs:\n%s", c.Tunnels(), n, err, c.Logs)
		}
	case err := <-c.done:
		c.done <- err
		t.Fatalf("connector stopped: %v", err)
	}
}

// Stop stops the connector and returns Run's error.
func (c *Connector) Stop() error {
	c.once.Do(func() {
		c.cancel()
		c.err = <-c.done
	})
	return c.err
}

// Done returns Run's result once it has returned, for connectors expected
// to stop by themselves (a refused enrollment).
func (c *Connector) Done(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		c.once.Do(func() { c.err = err })
		return err
	case <-time.After(timeout):
		t.Fatalf("connector still running after %s", timeout)
		return nil
	}
}

// WantRefusal fails the test unless err is (or wraps) a refusal with
// code whose text holds text.
func WantRefusal(t testing.TB, err error, code wire.Code, text string) {
	t.Helper()
	var ref *wire.Refusal
	if !errors.As(err, &ref) || ref.Code != code {
		t.Fatalf("error = %v; want a %s refusal", err, code)
	}
	if !strings.Contains(err.Error(), text) {
		t.Fatalf("error = %q; want it to say %q", err, text)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orDur(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
