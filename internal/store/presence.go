package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketEdges holds one presence key per live edge.
const BucketEdges = "sallyport_edges"

// PresenceTTL is how long an edge's presence key outlives its last
// renewal. The bucket's age limit removes it then, and leaves a delete
// marker that every watcher receives as the key's deletion: an edge that
// dies without a word leaves the set within PresenceTTL (plus the
// server's expiry scan, well under a second).
const PresenceTTL = 5 * time.Second

// presenceMarkerTTL is how long the marker of an expired key stays in the
// bucket: long enough for a watcher that reconnects to see it.
const presenceMarkerTTL = time.Minute

// EdgePresence is one edge's presence record, renewed every half second
// while the edge runs.
type EdgePresence struct {
	ID string `json:"id"`
	// Addresses are the edge's tunnel addresses (its advertise list), as
	// connectors should dial them.
	Addresses []string `json:"addresses"`
	// Draining is set while the edge stops: connectors should not dial it.
	Draining bool      `json:"draining,omitempty"`
	Version  string    `json:"version,omitempty"`
	Started  time.Time `json:"started"`
	// Connectors is how many connectors had a tunnel to the edge when it
	// wrote the record: a restarted edge is ready for clients once it
	// holds most of what the others hold.
	Connectors int `json:"connectors,omitempty"`
}

// Presence keeps the set of live edges. Each edge renews its own key; a
// key not renewed for PresenceTTL disappears, and watchers see it go.
type Presence interface {
	// PutPresence writes (or renews) p's key for PresenceTTL.
	PutPresence(ctx context.Context, p EdgePresence) error
	// DeletePresence removes edge id's key at once (a graceful stop).
	DeletePresence(ctx context.Context, id string) error
	// WatchPresence calls set with every live edge, then returns; after
	// that it calls set with the presence of an edge as it is written,
	// and gone with an edge's id when its key is deleted or expires, from
	// one goroutine and in order, until ctx ends or stop is called.
	WatchPresence(ctx context.Context, set func(EdgePresence), gone func(id string)) (stop func(), err error)
	// ConnectorsCaughtUp reads the connectors bucket's last sequence from
	// the store's leader and reports it, with whether the connectors
	// watch has delivered everything up to prev (a sequence an earlier
	// call returned). An error means the store could not be asked.
	ConnectorsCaughtUp(ctx context.Context, prev uint64) (last uint64, caughtUp bool, err error)
}

// edgesBucket binds (creating when missing) the presence bucket: keys
// expire PresenceTTL after their last write, with delete markers; a new
// bucket gets replicas copies, raised later as the others are.
func edgesBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, BucketEdges)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open store: bucket %s: %w", BucketEdges, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketEdges,
		Description: "sallyport live edges, by edge id; each key lapses 5s after its last renewal",
		History:     1,
		// The stream's age limit on each key's one message: a renewal
		// starts it again; a key left alone is removed, and the subject
		// delete marker (LimitMarkerTTL, nats-server >= 2.11) tells
		// every watcher so.
		TTL:            PresenceTTL,
		LimitMarkerTTL: presenceMarkerTTL,
		// On file, as the other buckets: a NATS restart must not lose
		// the bucket itself (its keys lapse anyway).
		Storage:      jetstream.FileStorage,
		Replicas:     replicas,
		MaxValueSize: 16 << 10,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, BucketEdges)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: create bucket %s (needs nats-server 2.11 or later): %w", BucketEdges, err)
	}
	return kv, nil
}

func presenceKey(id string) string { return "edges." + id }

// PutPresence implements Presence.
func (s *JetStream) PutPresence(ctx context.Context, p EdgePresence) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("put presence: %w", err)
	}
	if err := validateID("edge", p.ID); err != nil {
		return fmt.Errorf("put presence: %w", err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("put presence: %w", err)
	}
	if _, err := s.edges.Put(ctx, presenceKey(p.ID), b); err != nil {
		return fmt.Errorf("put presence of %s: %w", p.ID, err)
	}
	return nil
}

// DeletePresence implements Presence.
func (s *JetStream) DeletePresence(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return fmt.Errorf("delete presence: %w", err)
	}
	if err := validateID("edge", id); err != nil {
		return fmt.Errorf("delete presence: %w", err)
	}
	if err := s.edges.Delete(ctx, presenceKey(id)); err != nil {
		return fmt.Errorf("delete presence of %s: %w", id, err)
	}
	return nil
}

// WatchPresence implements Presence.
func (s *JetStream) WatchPresence(ctx context.Context, set func(EdgePresence), gone func(id string)) (stop func(), err error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("watch presence: %w", err)
	}
	return s.watchEntries(ctx, s.edges, "edge presence", func(e watchEntry) {
		id := strings.TrimPrefix(e.key, "edges.")
		if e.deleted {
			gone(id) // deleted on a graceful stop, or expired: a marker
			return
		}
		var p EdgePresence
		if err := json.Unmarshal(e.value, &p); err != nil || p.ID != id {
			s.log.Error("store: an edge presence record cannot be read; ignored", "key", e.key, "err", err)
			return
		}
		set(p)
	})
}

// ConnectorsCaughtUp implements Presence.
func (s *JetStream) ConnectorsCaughtUp(ctx context.Context, prev uint64) (last uint64, caughtUp bool, err error) {
	if err := s.check(); err != nil {
		return 0, false, fmt.Errorf("read the connectors bucket's state: %w", err)
	}
	st, err := s.connectors.Status(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("read the connectors bucket's state: %w", err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, false, errors.New("read the connectors bucket's state: no stream info")
	}
	return bs.StreamInfo().State.LastSeq, s.connectorsSeen.Load() >= prev, nil
}

// seenUpTo raises *seen to rev: the last stream sequence a watch has
// delivered, whatever the entry held.
func seenUpTo(seen *atomic.Uint64, rev uint64) {
	if seen == nil {
		return
	}
	for {
		old := seen.Load()
		if rev <= old || seen.CompareAndSwap(old, rev) {
			return
		}
	}
}
