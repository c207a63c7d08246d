package store

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket names. Operators with an external NATS cluster can inspect them
// with the nats CLI (`nats kv ls sallyport_tokens`).
const (
	BucketTokens     = "sallyport_tokens"
	BucketConnectors = "sallyport_connectors"
	BucketSessions   = "sallyport_sessions"
)

// defaultStartTimeout bounds the embedded server's start and the connection
// to an external server when ctx has no deadline.
const defaultStartTimeout = 10 * time.Second

// maxCASAttempts bounds ConsumeToken's retries on revision conflicts. Each
// conflict means another writer changed the token; after the first one the
// caller's check sees it used, so only unrelated concurrent updates retry.
const maxCASAttempts = 32

// Options configures Open.
type Options struct {
	// URL of an external NATS server or cluster (for example
	// "nats://n1:4222,nats://n2:4222"). Empty means: run an embedded server
	// in this process, with its data in Dir, that opens no port (a cluster
	// member, see Cluster, opens its cluster port and a loopback client
	// port that only this process can use).
	URL string
	// CAFile, CertFile and KeyFile configure TLS to an external URL: the
	// servers' CA (empty: the system's roots) and a client certificate
	// for servers that require one. CredsFile is a NATS .creds file.
	CAFile, CertFile, KeyFile, CredsFile string
	// Dir is the directory where the embedded server keeps its JetStream
	// files (created with mode 0700 if missing). Required when URL is empty;
	// ignored otherwise. Two stores must not share a Dir at once.
	Dir string
	// Name is the embedded server's name, unique per edge (its id) so
	// that edges can later form a cluster; default "sallyport-edge".
	Name string
	// Logger receives the store's and the embedded server's logs. The
	// server's notices and debug lines are logged at debug level, its
	// warnings and errors at theirs. Nil discards logs.
	Logger *slog.Logger
	// AuditRetention is how long the audit trail keeps events; zero means
	// DefaultAuditRetention (90 days).
	AuditRetention time.Duration
	// Cluster, when it names routes, makes the embedded server a member
	// of a cluster of edges and witnesses; nil (or no routes) means a
	// single node. Ignored with a URL.
	Cluster *Cluster
	// Replicas is how many copies JetStream keeps of each bucket and of
	// the audit stream: 1 keeps one for good; 0 or 3 create them with 3
	// when the cluster has three or more JetStream servers, else with 1,
	// and raise those with 1 to 3 once the third server is there (checked
	// at start and every ReplicaCheck). Replicas are never lowered.
	Replicas int
	// ReplicaCheck is how often a member checks whether the cluster has
	// grown to three servers; zero means 5s.
	ReplicaCheck time.Duration
}

// JetStream is a Store on NATS JetStream key-value buckets, one bucket per
// kind of record, keyed by id, values JSON. It is safe for concurrent use.
type JetStream struct {
	// heard is when the other members' heartbeats came (Quorum).
	heard heard

	log  *slog.Logger
	name string         // the embedded server's name
	lock *os.File       // holds the data directory's lock; nil with a URL
	srv  *server.Server // nil when connected to an external URL
	nc   *nats.Conn

	tokens     jetstream.KeyValue
	connectors jetstream.KeyValue
	sessions   jetstream.KeyValue
	edges      jetstream.KeyValue // presence: see presence.go
	js         jetstream.JetStream
	audit      jetstream.Stream

	// replicas is Options.Replicas.
	replicas int
	// member is set for an embedded server that is a cluster member.
	member bool
	// single, while a single node's records are adopted into the cluster,
	// is that node's server and connection (see adopt).
	single *embedded
	// stopRaise ends the replica raiser, raising waits for it.
	stopRaise chan struct{}
	raising   sync.WaitGroup
	// connectorsSeen is the last stream sequence the connectors watch
	// has delivered: the freshness fence compares it with the bucket's.
	connectorsSeen atomic.Uint64
	// denied is the last subject the NATS server refused this store's
	// user: Open names it when the buckets cannot be opened.
	denied atomic.Pointer[error]

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// embedded is an in-process NATS server and the connection to it.
type embedded struct {
	srv *server.Server
	nc  *nats.Conn
}

func (e *embedded) stop() {
	e.nc.Close()
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

var _ Store = (*JetStream)(nil)

// Open starts the embedded NATS server (or connects to opts.URL), creates
// the buckets if they do not exist, and returns the store. ctx bounds the
// start only. The caller must Close the store.
func Open(ctx context.Context, opts Options) (*JetStream, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout, clusterWait := defaultStartTimeout, defaultClusterStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		clusterWait = timeout
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("open store: %w", context.DeadlineExceeded)
	}

	s := &JetStream{log: log, name: opts.Name, replicas: opts.Replicas, stopRaise: make(chan struct{})}
	if opts.Replicas != 0 && opts.Replicas != 1 && opts.Replicas != 3 {
		return nil, fmt.Errorf("open store: Options.Replicas is %d; use 1, 3, or 0 for 3 once the cluster has three servers", opts.Replicas)
	}
	if opts.URL != "" {
		copts := append(s.connOptions(timeout), nats.MaxReconnects(-1))
		if opts.CAFile != "" {
			copts = append(copts, nats.RootCAs(opts.CAFile))
		}
		if opts.CertFile != "" {
			copts = append(copts, nats.ClientCert(opts.CertFile, opts.KeyFile))
		}
		if opts.CredsFile != "" {
			copts = append(copts, nats.UserCredentials(opts.CredsFile))
		}
		nc, err := nats.Connect(opts.URL, copts...)
		if err != nil {
			return nil, connectError(opts, err)
		}
		s.nc = nc
	} else {
		if err := s.startEmbedded(opts, timeout); err != nil {
			return nil, err
		}
	}

	if err := s.openAll(ctx, opts.AuditRetention, clusterWait); err != nil {
		s.shutdown()
		if denied := s.denied.Load(); denied != nil {
			err = permissionError(err, *denied)
		}
		return nil, err
	}
	if s.single != nil {
		err := s.adopt(ctx, opts.Dir)
		s.single.stop()
		s.single = nil
		if err != nil {
			s.shutdown()
			return nil, err
		}
	}
	if s.mayRaise() {
		every := cmp.Or(opts.ReplicaCheck, defaultReplicaCheck)
		s.raising.Go(func() { s.raiseLoop(every) })
	}
	return s, nil
}

// startEmbedded starts an in-process NATS server with JetStream file
// storage in opts.Dir and connects to it. A single node opens no port. A
// cluster member (opts.Cluster with routes) keeps its files in
// Dir/cluster and opens its cluster port and a loopback client port (see
// Cluster.clusterOptions); if Dir holds a single node's files, that node
// is started too, for Open to adopt its records into the cluster.
func (s *JetStream) startEmbedded(opts Options, timeout time.Duration) error {
	dir := opts.Dir
	if dir == "" {
		return errors.New("open store: Options.Dir is empty; name a directory for the embedded NATS data or set Options.URL")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("open store: create data directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	s.lock = lock
	if !opts.Cluster.clustered() {
		if wasMember(dir) {
			s.unlock()
			return fmt.Errorf("open store: %s holds the files of a cluster member, and no cluster route is configured; "+
				"start it with its routes (cluster.routes, or the cluster.json its join wrote), "+
				"or, to leave the cluster for good, move %s aside (its records stay with the cluster)", dir, filepath.Join(dir, clusterSubdir))
		}
		if opts.Cluster != nil {
			s.log.Info("store: a cluster port is configured but no route to another member: running as a single node with no port open; " +
				"NATS forms a cluster only with a route, so add one (cluster.routes, or join) and restart")
		}
		e, err := s.startServer(s.serverOptions(dir), "", timeout)
		if err != nil {
			s.unlock()
			return err
		}
		s.srv, s.nc = e.srv, e.nc
		return nil
	}
	if hasSingleNode(dir) && !adopted(dir) {
		if s.single, err = s.startServer(s.serverOptions(dir), "", timeout); err != nil {
			s.unlock()
			return fmt.Errorf("open store: read this node's single-node records before joining the cluster: %w", err)
		}
	}
	token := randomToken()
	sopts := s.serverOptions(filepath.Join(dir, clusterSubdir))
	if err := opts.Cluster.clusterOptions(sopts, token); err != nil {
		s.stopSingle()
		s.unlock()
		return err
	}
	e, err := s.startServer(sopts, token, timeout)
	if err != nil {
		s.stopSingle()
		s.unlock()
		return err
	}
	s.srv, s.nc, s.member = e.srv, e.nc, true
	if err := s.startHeartbeats(); err != nil {
		s.shutdown()
		return fmt.Errorf("open store: cluster heartbeats: %w", err)
	}
	return nil
}

// serverOptions are the embedded server's options as a single node with
// its files in storeDir.
func (s *JetStream) serverOptions(storeDir string) *server.Options {
	return &server.Options{
		ServerName: cmp.Or(s.name, "sallyport-edge"),
		DontListen: true, // in-process connections only: no client port
		NoSigs:     true, // the edge owns signal handling
		JetStream:  true,
		StoreDir:   storeDir,
		// Enrollment writes are rare and a consumed token must stay
		// consumed after a power loss: fsync every write rather than every
		// two minutes (the server's default).
		SyncAlways: true,
	}
}

// startServer starts a server with sopts and connects to it in-process
// with token (empty: none).
func (s *JetStream) startServer(sopts *server.Options, token string, timeout time.Duration) (*embedded, error) {
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("open store: configure embedded NATS: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log: s.log}, s.log.Enabled(context.Background(), slog.LevelDebug), false, false)
	srv.Start()
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("open store: embedded NATS did not start within %v; see the debug log", timeout)
	}
	copts := append(s.connOptions(timeout), nats.InProcessServer(srv))
	if token != "" {
		copts = append(copts, nats.Token(token))
	}
	nc, err := nats.Connect("", copts...)
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("open store: connect to embedded NATS: %w", err)
	}
	return &embedded{srv: srv, nc: nc}, nil
}

func (s *JetStream) stopSingle() {
	if s.single != nil {
		s.single.stop()
		s.single = nil
	}
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// connOptions are the client options common to both modes: asynchronous
// errors and connection changes go to the store's logger, not to stderr.
func (s *JetStream) connOptions(timeout time.Duration) []nats.Option {
	return []nats.Option{
		nats.Name("sallyport edge"),
		nats.Timeout(timeout),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				s.denied.Store(&err)
				s.log.Error("store: the NATS server refused this edge's user a subject; grant the user the permissions in README, External NATS",
					"err", err, "publish", EdgePermissions.Publish, "subscribe", EdgePermissions.Subscribe)
				return
			}
			if sub != nil {
				s.log.Warn("store: NATS error", "subject", sub.Subject, "err", err)
				return
			}
			s.log.Warn("store: NATS error", "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("store: disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("store: reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
	}
}

// openBuckets binds (creating when missing) the key-value buckets and the
// audit stream; new ones get replicas copies.
func (s *JetStream) openBuckets(ctx context.Context, auditRetention time.Duration, replicas int) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("open store: JetStream: %w", err)
	}
	s.tokens, err = bucket(ctx, js, BucketTokens, "sallyport enrollment tokens, by token id", replicas)
	if err != nil {
		return err
	}
	s.connectors, err = bucket(ctx, js, BucketConnectors, "sallyport enrolled connectors, by certificate serial", replicas)
	if err != nil {
		return err
	}
	s.sessions, err = bucket(ctx, js, BucketSessions, "sallyport one-time client sessions, by session id", replicas)
	if err != nil {
		return err
	}
	if s.edges, err = edgesBucket(ctx, js, replicas); err != nil {
		return err
	}
	return s.openAudit(ctx, js, auditRetention, replicas)
}

// bucket returns the named bucket, creating it with replicas copies if
// missing. An existing bucket's configuration is left as it is: the
// replica raiser (raiseLoop) raises it, and an edge that starts later must
// not lower it again.
func bucket(ctx context.Context, js jetstream.JetStream, name, desc string, replicas int) (jetstream.KeyValue, error) {
	_, err := js.KeyValue(ctx, name)
	if err == nil {
		return leaderReads(ctx, js, name)
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open store: bucket %s: %w", name, err)
	}
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: desc,
		History:     1, // only the latest value; CAS needs the revision, not history
		Storage:     jetstream.FileStorage,
		// One copy on a single node; three in a cluster of three or more
		// servers, so that a bucket survives the loss of one.
		Replicas:     replicas,
		MaxValueSize: 64 << 10,
	})
	if err != nil && !errors.Is(err, jetstream.ErrBucketExists) { // exists: another edge created it first
		return nil, fmt.Errorf("open store: create bucket %s: %w", name, err)
	}
	return leaderReads(ctx, js, name)
}

// leaderReads turns off direct gets on bucket name's stream (the KV API
// turns them on), then binds the bucket. A direct get may be answered by
// any replica, and a replica a write has not reached yet answers with the
// old value or none: in a cluster, a session created through one edge
// and used a moment later through another would be "unknown" (seen in
// TestClusterOfThree right after a member stopped). Reads from the
// stream's leader see every acknowledged write; at sallyport's read rates
// (no read per client connection) the leader can serve them all. On an
// external NATS, the edge's user must be allowed to update the bucket's
// stream (once); Open fails, saying so, otherwise.
func leaderReads(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, kvStream(name))
	if err != nil {
		return nil, fmt.Errorf("open store: bucket %s: %w", name, err)
	}
	if cfg := st.CachedInfo().Config; cfg.AllowDirect {
		cfg.AllowDirect = false
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("open store: bucket %s: turn reads from any replica off (allow_direct): %w; "+
				"allow this NATS user to update stream %s, or set allow_direct false on it yourself", name, err, kvStream(name))
		}
	}
	kv, err := js.KeyValue(ctx, name) // bound after the change: reads go to the leader
	if err != nil {
		return nil, fmt.Errorf("open store: bucket %s: %w", name, err)
	}
	return kv, nil
}

// Close closes the connection and, when embedded, shuts the NATS server down
// and waits for it. It is idempotent and safe to call concurrently.
func (s *JetStream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.shutdown()
	})
	return s.closeErr
}

// shutdown closes the connection, then stops the embedded server and waits
// for it, then releases the data directory. Every write a caller saw succeed
// was acknowledged by JetStream, so nothing buffered is lost.
func (s *JetStream) shutdown() error {
	close(s.stopRaise)
	s.raising.Wait()
	s.stopSingle()
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	return s.unlock()
}

func (s *JetStream) unlock() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the file releases the flock
	s.lock = nil
	if err != nil {
		return fmt.Errorf("close store: release data directory lock: %w", err)
	}
	return nil
}

func (s *JetStream) check() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}
