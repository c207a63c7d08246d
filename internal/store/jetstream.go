package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
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
	// in this process that opens no port, with its data in Dir.
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
}

// JetStream is a Store on NATS JetStream key-value buckets, one bucket per
// kind of record, keyed by id, values JSON. It is safe for concurrent use.
type JetStream struct {
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

	// connectorsSeen is the last stream sequence the connectors watch
	// has delivered: the freshness fence compares it with the bucket's.
	connectorsSeen atomic.Uint64

	// reconnects.ch is closed and replaced at each reconnection to an
	// external NATS server, so that watches resume at once (see
	// watchEntries).
	reconnects struct {
		sync.Mutex
		ch chan struct{}
	}

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
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
	timeout := defaultStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("open store: %w", context.DeadlineExceeded)
	}

	s := &JetStream{log: log, name: opts.Name}
	s.reconnects.ch = make(chan struct{})
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
			return nil, fmt.Errorf("open store: connect to NATS at %s: %w; check the URL and that the server runs with JetStream", opts.URL, err)
		}
		s.nc = nc
	} else {
		if err := s.startEmbedded(opts.Dir, timeout); err != nil {
			return nil, err
		}
	}

	if err := s.openBuckets(ctx, opts.AuditRetention); err != nil {
		s.shutdown()
		return nil, err
	}
	return s, nil
}

// startEmbedded starts an in-process NATS server with JetStream file
// storage in dir and connects to it without a socket.
func (s *JetStream) startEmbedded(dir string, timeout time.Duration) error {
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
	sopts := &server.Options{
		ServerName: cmp.Or(s.name, "sallyport-edge"),
		DontListen: true, // in-process connections only: no client port
		NoSigs:     true, // the edge owns signal handling
		JetStream:  true,
		StoreDir:   dir,
		// Enrollment writes are rare and a consumed token must stay
		// consumed after a power loss: fsync every write rather than every
		// two minutes (the server's default).
		SyncAlways: true,
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		s.unlock()
		return fmt.Errorf("open store: configure embedded NATS: %w", err)
	}
	srv.SetLoggerV2(natsLogger{log: s.log}, s.log.Enabled(context.Background(), slog.LevelDebug), false, false)
	srv.Start()
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		s.unlock()
		return fmt.Errorf("open store: embedded NATS did not start within %v; see the debug log", timeout)
	}
	nc, err := nats.Connect("", append(s.connOptions(timeout), nats.InProcessServer(srv))...)
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		s.unlock()
		return fmt.Errorf("open store: connect to embedded NATS: %w", err)
	}
	s.srv, s.nc = srv, nc
	return nil
}

// connOptions are the client options common to both modes: asynchronous
// errors and connection changes go to the store's logger, not to stderr.
func (s *JetStream) connOptions(timeout time.Duration) []nats.Option {
	return []nats.Option{
		nats.Name("sallyport edge"),
		nats.Timeout(timeout),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
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
			s.reconnected()
		}),
	}
}

// openBuckets binds (creating when missing) the key-value buckets.
func (s *JetStream) openBuckets(ctx context.Context, auditRetention time.Duration) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("open store: JetStream: %w", err)
	}
	s.tokens, err = bucket(ctx, js, BucketTokens, "sallyport enrollment tokens, by token id")
	if err != nil {
		return err
	}
	s.connectors, err = bucket(ctx, js, BucketConnectors, "sallyport enrolled connectors, by certificate serial")
	if err != nil {
		return err
	}
	s.sessions, err = bucket(ctx, js, BucketSessions, "sallyport one-time client sessions, by session id")
	if err != nil {
		return err
	}
	if s.edges, err = edgesBucket(ctx, js); err != nil {
		return err
	}
	return s.openAudit(ctx, js, auditRetention)
}

// bucket returns the named bucket, creating it if missing. An existing
// bucket's configuration is left as it is: a cluster raises the replica
// count once, by hand (`nats kv edit <bucket> --replicas 3`) or by a future
// migration, and an edge that starts later must not lower it again.
func bucket(ctx context.Context, js jetstream.JetStream, name, desc string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open store: bucket %s: %w", name, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: desc,
		History:     1, // only the latest value; CAS needs the revision, not history
		Storage:     jetstream.FileStorage,
		// One copy on a single node. In a cluster of three or more NATS
		// servers this becomes 3 so that a bucket survives the loss of one.
		Replicas:     1,
		MaxValueSize: 64 << 10,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, name) // another edge created it first
	}
	if err != nil {
		return nil, fmt.Errorf("open store: create bucket %s: %w", name, err)
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

// CreateToken implements Store.
func (s *JetStream) CreateToken(ctx context.Context, t Token) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	if err := validateID("token", t.ID); err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	if len(t.SecretHash) != 32 {
		return fmt.Errorf("create token %s: secret hash is %d bytes; store the SHA-256 of the secret (32 bytes), never the secret", t.ID, len(t.SecretHash))
	}
	return create(ctx, s.tokens, "token", t.ID, t)
}

// create stores v under key, which must be new; what names the kind of
// value in errors.
func create(ctx context.Context, kv jetstream.KeyValue, what, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("create %s %s: %w", what, key, err)
	}
	if _, err := kv.Create(ctx, key, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("create %s %s: %w; generate a new id", what, key, ErrExists)
		}
		return fmt.Errorf("create %s %s: %w", what, key, err)
	}
	return nil
}

// GetToken implements Store.
func (s *JetStream) GetToken(ctx context.Context, id string) (Token, error) {
	t, _, err := s.getToken(ctx, id)
	if err != nil {
		return Token{}, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// getToken reads token id and its revision. Errors name the token only.
func (s *JetStream) getToken(ctx context.Context, id string) (Token, uint64, error) {
	if err := s.check(); err != nil {
		return Token{}, 0, err
	}
	if err := validateID("token", id); err != nil {
		return Token{}, 0, err
	}
	var t Token
	rev, err := get(ctx, s.tokens, id, &t)
	if err != nil {
		return Token{}, 0, fmt.Errorf("token %s: %w", id, err)
	}
	return t, rev, nil
}

// ConsumeToken implements Store.
func (s *JetStream) ConsumeToken(ctx context.Context, id string, check func(Token) error, by string, at time.Time) (Token, error) {
	if check == nil {
		return Token{}, errors.New("consume token: check is nil; pass the redemption policy")
	}
	if by == "" || at.IsZero() {
		return Token{}, errors.New("consume token: the redeeming connector id and the time are required")
	}
	t, err := s.UpdateToken(ctx, id, func(t *Token) error {
		if err := check(*t); err != nil {
			return err
		}
		if t.Used() {
			return fmt.Errorf("consume token %s: %w by %s at %s", id, ErrTokenUsed, t.UsedBy, t.UsedAt.Format(time.RFC3339))
		}
		t.UsedAt, t.UsedBy = at, by
		return nil
	})
	var ok *updateError
	if errors.As(err, &ok) {
		return Token{}, fmt.Errorf("consume token: %w", err)
	}
	return t, err
}

// UpdateToken implements Store.
func (s *JetStream) UpdateToken(ctx context.Context, id string, fn func(*Token) error) (Token, error) {
	if err := s.check(); err != nil {
		return Token{}, fmt.Errorf("update token: %w", err)
	}
	if err := validateID("token", id); err != nil {
		return Token{}, fmt.Errorf("update token: %w", err)
	}
	return update(ctx, s.tokens, "token", id, fn)
}

// PruneTokens implements Store.
func (s *JetStream) PruneTokens(ctx context.Context, before time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, fmt.Errorf("prune tokens: %w", err)
	}
	return prune(ctx, s.tokens, "token", before, func(t Token) string { return t.ID }, func(t Token) time.Time {
		if t.Used() {
			return t.UsedAt
		}
		return t.ExpiresAt
	})
}

// prune removes every value in kv that finished (by finished) before
// `before`, and returns how many it removed. Each removal is conditional
// on the revision that was read, so that a value written meanwhile stays.
func prune[T any](ctx context.Context, kv jetstream.KeyValue, what string, before time.Time, keyOf func(T) string, finished func(T) time.Time) (int, error) {
	all, err := list[T](ctx, kv)
	if err != nil {
		return 0, fmt.Errorf("prune %ss: %w", what, err)
	}
	n := 0
	for _, listed := range all {
		key := keyOf(listed)
		var v T
		rev, err := get(ctx, kv, key, &v)
		if errors.Is(err, ErrNotFound) {
			continue // pruned by another edge
		}
		if err != nil {
			return n, fmt.Errorf("prune %s %s: %w", what, key, err)
		}
		if !finished(v).Before(before) {
			continue
		}
		err = kv.Purge(ctx, key, jetstream.LastRevision(rev))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // written meanwhile: left for the next pass
		}
		if err != nil {
			return n, fmt.Errorf("prune %s %s: %w", what, key, err)
		}
		n++
	}
	return n, nil
}

// ListTokens implements Store.
func (s *JetStream) ListTokens(ctx context.Context) ([]Token, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	ts, err := list[Token](ctx, s.tokens)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	slices.SortFunc(ts, func(a, b Token) int { return strings.Compare(a.ID, b.ID) })
	return ts, nil
}

// PutConnector implements Store.
func (s *JetStream) PutConnector(ctx context.Context, c Connector) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("put connector: %w", err)
	}
	if err := validateID("connector", c.ID); err != nil {
		return fmt.Errorf("put connector: %w", err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("put connector %s: %w", c.ID, err)
	}
	if _, err := s.connectors.Put(ctx, c.ID, b); err != nil {
		return fmt.Errorf("put connector %s: %w", c.ID, err)
	}
	return nil
}

// UpdateConnector implements Store.
func (s *JetStream) UpdateConnector(ctx context.Context, id string, fn func(*Connector) error) (Connector, error) {
	if err := s.check(); err != nil {
		return Connector{}, fmt.Errorf("update connector: %w", err)
	}
	if err := validateID("connector", id); err != nil {
		return Connector{}, fmt.Errorf("update connector: %w", err)
	}
	return update(ctx, s.connectors, "connector", id, fn)
}

// WatchConnectors implements Store.
func (s *JetStream) WatchConnectors(ctx context.Context, fn func(Connector)) (stop func(), err error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("watch connectors: %w", err)
	}
	return watch(ctx, s, s.connectors, "connector", &s.connectorsSeen, func(c *Connector, rev uint64) { c.Revision = rev }, fn)
}

// watch calls fn with every value of kv (records of kind what), then
// returns; from then on a goroutine calls fn with each value written,
// until stop (or ctx's end). A value that cannot be decoded is logged and
// skipped; setRev, if not nil, gives each its revision. Deletions are not
// delivered. seen, if not nil, follows the last revision delivered,
// deletions included.
func watch[T any](ctx context.Context, s *JetStream, kv jetstream.KeyValue, what string, seen *atomic.Uint64, setRev func(*T, uint64), fn func(T)) (stop func(), err error) {
	return s.watchEntries(ctx, kv, what, func(e jetstream.KeyValueEntry) {
		defer seenUpTo(seen, e.Revision())
		if e.Operation() != jetstream.KeyValuePut {
			return
		}
		var v T
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			s.log.Error("store: a "+what+" record cannot be read; ignored", "key", e.Key(), "revision", e.Revision(), "err", err)
			return
		}
		if setRev != nil {
			setRev(&v, e.Revision())
		}
		fn(v)
	})
}

// watchEntries calls deliver with every entry of kv, deletions included,
// then returns; from then on a goroutine calls it with each entry
// written, until stop (or ctx's end). After a reconnection to the NATS
// server the watch starts again from the revision after the last it
// delivered: the client's ordered consumer would find its way back by
// itself only after missing several heartbeats (18 s measured after a
// server restart), far beyond the fence's 1.5 s.
func (s *JetStream) watchEntries(ctx context.Context, kv jetstream.KeyValue, what string, deliver func(jetstream.KeyValueEntry)) (stop func(), err error) {
	wctx, cancel := context.WithCancel(ctx)
	reconnected := s.reconnectSignal() // taken first: no reconnection goes unseen
	w, err := kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch %ss: %w", what, err)
	}
	var last uint64 // the last revision delivered
	// The current values first, up to the marker (nil) that ends them.
	for initial := true; initial; {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				cancel()
				return nil, fmt.Errorf("watch %ss: the watcher closed before the values were read; retry", what)
			case e == nil:
				initial = false
			default:
				last = max(last, e.Revision())
				deliver(e)
			}
		case <-ctx.Done():
			cancel()
			stopWatcher(w)
			return nil, fmt.Errorf("watch %ss: %w", what, ctx.Err())
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil && e.Revision() > last {
					last = e.Revision()
					deliver(e)
				}
			case <-reconnected:
				reconnected = s.reconnectSignal()
				stopWatcher(w)
				if w = s.resumeWatch(wctx, kv, what, last); w == nil {
					return
				}
			case <-wctx.Done():
				stopWatcher(w)
				return
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}, nil
}

// resumeWatch watches kv again from the revision after last, retrying
// while the server cannot serve it yet (its JetStream still starting),
// until ctx ends; nil then.
func (s *JetStream) resumeWatch(ctx context.Context, kv jetstream.KeyValue, what string, last uint64) jetstream.KeyWatcher {
	for attempt := 1; ; attempt++ {
		w, err := kv.WatchAll(ctx, jetstream.ResumeFromRevision(last+1))
		if err == nil {
			s.log.Info("store: "+what+" watch resumed after a reconnection", "from_revision", last+1)
			return w
		}
		if attempt == 1 {
			s.log.Warn("store: the "+what+" watch cannot resume yet; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(min(attempt, 8)) * 250 * time.Millisecond):
		}
	}
}

// reconnectSignal is closed at the next reconnection to the NATS server.
func (s *JetStream) reconnectSignal() <-chan struct{} {
	s.reconnects.Lock()
	defer s.reconnects.Unlock()
	return s.reconnects.ch
}

func (s *JetStream) reconnected() {
	s.reconnects.Lock()
	defer s.reconnects.Unlock()
	close(s.reconnects.ch)
	s.reconnects.ch = make(chan struct{})
}

// GetConnector implements Store.
func (s *JetStream) GetConnector(ctx context.Context, id string) (Connector, error) {
	if err := s.check(); err != nil {
		return Connector{}, fmt.Errorf("get connector: %w", err)
	}
	if err := validateID("connector", id); err != nil {
		return Connector{}, fmt.Errorf("get connector: %w", err)
	}
	var c Connector
	rev, err := get(ctx, s.connectors, id, &c)
	if err != nil {
		return Connector{}, fmt.Errorf("get connector %s: %w", id, err)
	}
	c.Revision = rev
	return c, nil
}

// ListConnectors implements Store.
func (s *JetStream) ListConnectors(ctx context.Context) ([]Connector, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("list connectors: %w", err)
	}
	cs, err := list[Connector](ctx, s.connectors)
	if err != nil {
		return nil, fmt.Errorf("list connectors: %w", err)
	}
	slices.SortFunc(cs, func(a, b Connector) int { return strings.Compare(a.ID, b.ID) })
	return cs, nil
}

func (c *Connector) setRevision(rev uint64) { c.Revision = rev }

// updateError is a store failure in update, as opposed to the error of the
// caller's fn, which update returns unchanged.
type updateError struct{ err error }

func (e *updateError) Error() string { return e.err.Error() }
func (e *updateError) Unwrap() error { return e.err }

// update changes the value at key with fn by compare-and-swap, reading
// again after a concurrent write, at most maxCASAttempts times. what names
// the kind of value in errors. fn's own error is returned unchanged; the
// store's are *updateError.
func update[T any](ctx context.Context, kv jetstream.KeyValue, what, key string, fn func(*T) error) (T, error) {
	var zero T
	for range maxCASAttempts {
		var v T
		rev, err := get(ctx, kv, key, &v)
		if err != nil {
			return zero, &updateError{fmt.Errorf("%s %s: %w", what, key, err)}
		}
		if err := fn(&v); err != nil {
			return zero, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return zero, &updateError{fmt.Errorf("%s %s: %w", what, key, err)}
		}
		rev, err = kv.Update(ctx, key, b, rev)
		if err == nil {
			if r, ok := any(&v).(interface{ setRevision(uint64) }); ok {
				r.setRevision(rev)
			}
			return v, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return zero, &updateError{fmt.Errorf("%s %s: %w", what, key, err)}
		}
		// Someone else wrote the value since we read it: read it again.
	}
	return zero, &updateError{fmt.Errorf("%s %s: gave up after %d concurrent updates; retry", what, key, maxCASAttempts)}
}

// get decodes the latest value of key into v and returns its revision.
func get(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("decode stored value at revision %d: %w", e.Revision(), err)
	}
	return e.Revision(), nil
}

// list decodes the latest value of every key in kv. It reads the bucket
// with one watcher (one ordered consumer) rather than one request per key.
func list[T any](ctx context.Context, kv jetstream.KeyValue) ([]T, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer stopWatcher(w)
	var out []T
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watcher closed before the values were read; retry")
			}
			if e == nil { // all current values delivered
				return out, nil
			}
			var v T
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return nil, fmt.Errorf("decode key %s at revision %d: %w", e.Key(), e.Revision(), err)
			}
			out = append(out, v)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// stopWatcher stops w and drains its channel until the subscription closes
// it, so that the delivery callback, which blocks on a full channel, returns.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	for range w.Updates() {
	}
}
