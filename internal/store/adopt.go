package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sallyport/sallyport/internal/atomicfile"
)

// A single node that becomes a cluster member keeps its records: NATS
// would not (a JetStream server that turns clustered finds its old
// streams unknown to the cluster's meta group and deletes them as
// orphans). So the member keeps its cluster files apart (Dir/cluster),
// and on its first start as a member, Open copies the single node's
// records into the cluster: every key of every bucket that the cluster
// does not hold yet (a key it holds wins: it is newer shared state), and
// every audit event. Dir/cluster/adopted-single-node then records that it
// was done; the single node's files stay in Dir as a backup. A copy
// stopped half-way is done again at the next start: keys already copied
// are skipped, audit events copied before the stop appear twice.

// adopted reports whether dir's single-node records were already copied
// into the cluster.
func adopted(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, clusterSubdir, adoptedFile))
	return err == nil
}

// adopt copies the records of s.single into the cluster's buckets and
// audit stream, then marks dir adopted.
func (s *JetStream) adopt(ctx context.Context, dir string) error {
	from, err := jetstream.New(s.single.nc)
	if err != nil {
		return fmt.Errorf("open store: adopt single-node records: %w", err)
	}
	counts := []any{}
	for _, b := range []struct {
		name string
		to   jetstream.KeyValue
	}{{BucketTokens, s.tokens}, {BucketConnectors, s.connectors}, {BucketSessions, s.sessions}} {
		copied, kept, err := s.copyBucket(ctx, from, b.name, b.to)
		if err != nil {
			return fmt.Errorf("open store: adopt single-node records of %s: %w; the single node's files in %s are untouched, restart to try again", b.name, err, dir)
		}
		counts = append(counts, b.name, copied)
		if kept > 0 {
			counts = append(counts, b.name+"_kept_from_cluster", kept)
		}
	}
	n, err := s.copyAudit(ctx, from)
	if err != nil {
		return fmt.Errorf("open store: adopt single-node audit events: %w; restart to try again", err)
	}
	counts = append(counts, "audit_events", n)
	note := fmt.Sprintf("single-node records from %s copied into the cluster at %s\n", filepath.Join(dir, "jetstream"), time.Now().UTC().Format(time.RFC3339))
	if err := atomicfile.Write(filepath.Join(dir, clusterSubdir, adoptedFile), []byte(note), 0o600); err != nil {
		return fmt.Errorf("open store: adopt single-node records: %w", err)
	}
	s.log.Info("store: this node's single-node records now live in the cluster; its old files stay as a backup and may be deleted once the cluster is healthy",
		append(counts, "backup", filepath.Join(dir, "jetstream"))...)
	return nil
}

// copyBucket creates in `to` every key of the single node's bucket name
// that `to` does not hold; kept counts those it held.
func (s *JetStream) copyBucket(ctx context.Context, from jetstream.JetStream, name string, to jetstream.KeyValue) (copied, kept int, err error) {
	kv, err := from.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	err = entries(ctx, kv, func(e jetstream.KeyValueEntry) error {
		_, err := to.Create(ctx, e.Key(), e.Value())
		switch {
		case errors.Is(err, jetstream.ErrKeyExists):
			kept++
			s.log.Warn("store: the cluster already holds this key; its value is kept, the single node's dropped", "bucket", name, "key", e.Key())
			return nil
		case err != nil:
			return fmt.Errorf("key %s: %w", e.Key(), err)
		}
		copied++
		return nil
	})
	return copied, kept, err
}

// copyAudit appends the single node's audit events to the cluster's audit
// stream, oldest first.
func (s *JetStream) copyAudit(ctx context.Context, from jetstream.JetStream) (int, error) {
	st, err := from.Stream(ctx, StreamAudit)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	last := st.CachedInfo().State.LastSeq
	if st.CachedInfo().State.Msgs == 0 {
		return 0, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return n, err
		}
		if _, err := s.js.Publish(ctx, subjectAudit, msg.Data()); err != nil {
			return n, err
		}
		n++
		md, err := msg.Metadata()
		if err != nil {
			return n, err
		}
		if md.Sequence.Stream >= last {
			return n, nil
		}
	}
}
