package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Watches use neither the KV API's WatchAll nor the library's ordered
// consumer:
//
//   - WatchAll's push consumer asks for a heartbeat every 5 s and is
//     recreated only after two are missed, so a watch whose consumer lived
//     on a cluster member that is lost stalled for about 15 s (measured: a
//     revocation reached the other edge 14.7 s after a witness stopped);
//   - the library's pull ordered consumer recreates itself while holding
//     a lock that its Stop needs, retrying with 10 s requests and backoff,
//     so an edge stopping in a cluster without a quorum hung in Stop.
//
// So a watch owns a plain ephemeral pull consumer (no acks, in memory, one
// replica) with a heartbeat every watchHeartbeat, and replaces it itself,
// from the last revision it delivered, when heartbeats stop, a delivery is
// missing, or the consumer is gone; every request it makes is bounded and
// ends at once when the watch is stopped.
const (
	watchHeartbeat = 500 * time.Millisecond
	watchExpiry    = 2 * time.Second
	// watchRetry is the pause after a failed attempt to create a watch's
	// consumer (while the cluster elects a leader, say).
	watchRetry = 100 * time.Millisecond
	// watchInactive is how long the server keeps a watch consumer nobody
	// pulls from: one replaced or left by a stopped watch goes by itself.
	watchInactive = 10 * time.Second
	// kvOperation is the header a KV delete or purge carries.
	kvOperation = "KV-Operation"
)

// watch calls fn with every value of kv (records of kind what), then
// returns; from then on a goroutine calls fn with each value written, in
// order, until stop (or ctx's end). A value that cannot be decoded is
// logged and skipped; setRev, if not nil, gives each its revision.
// Deletions are not delivered. seen, if not nil, follows the last
// revision delivered, deletions included.
func watch[T any](ctx context.Context, s *JetStream, kv jetstream.KeyValue, what string, seen *atomic.Uint64, setRev func(*T, uint64), fn func(T)) (stop func(), err error) {
	return s.watchEntries(ctx, kv, what, func(e watchEntry) {
		defer seenUpTo(seen, e.rev)
		if e.deleted {
			return
		}
		var v T
		if err := json.Unmarshal(e.value, &v); err != nil {
			s.log.Error("store: a "+what+" record cannot be read; ignored", "key", e.key, "revision", e.rev, "err", err)
			return
		}
		if setRev != nil {
			setRev(&v, e.rev)
		}
		fn(v)
	})
}

// watchEntry is one message of a bucket's stream as a watch sees it.
type watchEntry struct {
	key     string
	value   []byte
	rev     uint64
	deleted bool // a deletion, a purge, or a key that outlived the bucket's TTL
}

// watchEntries calls deliver with every entry of kv (the last of each
// key), deletions included, then returns; from then on a goroutine calls
// it with each entry written, in order, until stop (or ctx's end).
func (s *JetStream) watchEntries(ctx context.Context, kv jetstream.KeyValue, what string, deliver func(watchEntry)) (stop func(), err error) {
	prefix := "$KV." + kv.Bucket() + "."
	st, err := s.js.Stream(ctx, kvStream(kv.Bucket()))
	if err != nil {
		return nil, fmt.Errorf("watch %ss: %w", what, err)
	}
	empty := st.CachedInfo().State.Msgs == 0
	wctx, cancel := context.WithCancel(ctx)
	w := &follower{log: s.log, what: what, st: st, filter: prefix + ">"}
	var wg sync.WaitGroup
	wg.Go(func() { // ends a Next that waits, at stop or ctx's end
		<-wctx.Done()
		w.stop()
	})
	stop = func() {
		cancel()
		wg.Wait()
	}
	// hand delivers one message and reports whether it was the last of
	// those pending when it was read.
	hand := func(msg jetstream.Msg, md *jetstream.MsgMetadata) (last bool) {
		h := msg.Headers()
		deliver(watchEntry{
			key:     strings.TrimPrefix(msg.Subject(), prefix),
			value:   msg.Data(),
			rev:     md.Sequence.Stream,
			deleted: h.Get(kvOperation) != "" || h.Get(jetstream.MarkerReasonHeader) != "",
		})
		return md.NumPending == 0
	}
	// The current values first.
	for initial := !empty; initial; {
		msg, md, err := w.next(wctx)
		if err != nil {
			stop()
			return nil, fmt.Errorf("watch %ss: %w", what, err)
		}
		initial = !hand(msg, md)
	}
	wg.Go(func() {
		for {
			msg, md, err := w.next(wctx)
			if err != nil {
				return // stopped
			}
			hand(msg, md)
		}
	})
	return stop, nil
}

// follower reads a stream's messages on subjects matching filter, in
// order, each once, across replacements of its consumer. next is called
// from one goroutine at a time; stop from any.
type follower struct {
	log    interface{ Debug(string, ...any) }
	what   string
	st     jetstream.Stream
	filter string
	// lastStream and lastConsumer are the stream and consumer sequences
	// of the last message next returned.
	lastStream, lastConsumer uint64

	// mu guards it and stopped: stop ends the current iterator's Next.
	mu      sync.Mutex
	it      jetstream.MessagesContext
	stopped bool
}

// next returns the next message and its metadata, replacing the consumer
// as needed; it fails only once ctx ends or the follower is stopped.
func (f *follower) next(ctx context.Context) (jetstream.Msg, *jetstream.MsgMetadata, error) {
	for {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		it, err := f.iterator(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			f.log.Debug("store: "+f.what+" watch: cannot create its consumer; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(watchRetry):
			}
			continue
		}
		msg, err := it.Next()
		if err != nil {
			f.drop(it, err)
			continue
		}
		md, err := msg.Metadata()
		if err != nil || md.Sequence.Consumer != f.lastConsumer+1 {
			f.drop(it, fmt.Errorf("delivery out of order (metadata error: %v)", err))
			continue
		}
		f.lastConsumer, f.lastStream = md.Sequence.Consumer, md.Sequence.Stream
		return msg, md, nil
	}
}

// iterator returns the current consumer's iterator, creating a consumer
// that starts after the last message returned (or, at first, at each
// subject's last message) when there is none.
func (f *follower) iterator(ctx context.Context) (jetstream.MessagesContext, error) {
	f.mu.Lock()
	it, stopped := f.it, f.stopped
	f.mu.Unlock()
	if stopped {
		return nil, errors.New("watch stopped")
	}
	if it != nil {
		return it, nil
	}
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     f.filter,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: watchInactive,
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
	}
	if f.lastStream > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.lastStream+1
	}
	cctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	cons, err := f.st.CreateOrUpdateConsumer(cctx, cfg)
	if err != nil {
		return nil, err
	}
	it, err = cons.Messages(jetstream.PullHeartbeat(watchHeartbeat), jetstream.PullExpiry(watchExpiry),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		it.Stop()
		return nil, errors.New("watch stopped")
	}
	f.it, f.lastConsumer = it, 0
	return it, nil
}

// drop stops iterator it, which failed with err, so that next makes a new
// consumer from the last message returned.
func (f *follower) drop(it jetstream.MessagesContext, err error) {
	it.Stop()
	f.mu.Lock()
	if f.it == it {
		f.it = nil
	}
	stopped := f.stopped
	f.mu.Unlock()
	if !stopped && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
		f.log.Debug("store: "+f.what+" watch interrupted; resuming after the last revision seen", "revision", f.lastStream, "err", err)
	}
}

// stop ends the follower: a Next that waits returns, and no consumer is
// made again.
func (f *follower) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	if f.it != nil {
		f.it.Stop()
	}
}
