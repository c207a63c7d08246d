package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Watches do not use the KV API's WatchAll: its ordered push consumer
// asks for a heartbeat every 5 s and is recreated only after two are
// missed, so a watch whose consumer lived on a cluster member that is lost
// stalls for about 15 s (measured: a revocation reached the other edge
// 14.7 s after a witness stopped). A pull-based ordered consumer with a
// heartbeat of watchHeartbeat is recreated, from the last revision seen,
// within about two of them.
const (
	watchHeartbeat = 500 * time.Millisecond
	watchExpiry    = 2 * time.Second
	// watchRetry is the pause after a failed attempt to recreate a
	// watch's consumer (while the cluster elects a leader, say).
	watchRetry = 100 * time.Millisecond
	// kvOperation is the header a KV delete or purge carries.
	kvOperation = "KV-Operation"
)

// watch calls fn with every value of kv (records of kind what), then
// returns; from then on a goroutine calls fn with each value written, in
// order, until stop (or ctx's end). A value that cannot be decoded is
// logged and skipped; setRev, if not nil, gives each its revision.
// Deletions are not delivered.
func watch[T any](ctx context.Context, s *JetStream, kv jetstream.KeyValue, what string, setRev func(*T, uint64), fn func(T)) (stop func(), err error) {
	prefix := "$KV." + kv.Bucket() + "."
	st, err := s.js.Stream(ctx, kvStream(kv.Bucket()))
	if err != nil {
		return nil, fmt.Errorf("watch %ss: %w", what, err)
	}
	empty := st.CachedInfo().State.Msgs == 0
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + ">"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("watch %ss: %w", what, err)
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(watchHeartbeat), jetstream.PullExpiry(watchExpiry))
	if err != nil {
		return nil, fmt.Errorf("watch %ss: %w", what, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { // ends a Next that waits, at stop or ctx's end
		<-wctx.Done()
		it.Stop()
	})
	stop = func() {
		cancel()
		wg.Wait()
	}
	// deliver hands one message to fn and reports whether it was the last
	// of the values current when the watch began.
	deliver := func(msg jetstream.Msg) (last bool) {
		md, err := msg.Metadata()
		if err != nil {
			s.log.Error("store: a "+what+" watch message has no metadata; ignored", "err", err)
			return false
		}
		last = md.NumPending == 0
		if op := msg.Headers().Get(kvOperation); op != "" {
			return last // a deletion or purge
		}
		var v T
		if err := json.Unmarshal(msg.Data(), &v); err != nil {
			s.log.Error("store: a "+what+" record cannot be read; ignored", "key", strings.TrimPrefix(msg.Subject(), prefix), "revision", md.Sequence.Stream, "err", err)
			return last
		}
		if setRev != nil {
			setRev(&v, md.Sequence.Stream)
		}
		fn(v)
		return last
	}
	// The current values first.
	for initial := !empty; initial; {
		msg, err := s.nextWatched(wctx, it, what)
		if err != nil {
			stop()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("watch %ss: %w", what, ctx.Err())
			}
			return nil, fmt.Errorf("watch %ss: %w; retry", what, err)
		}
		initial = !deliver(msg)
	}
	wg.Go(func() {
		for {
			msg, err := s.nextWatched(wctx, it, what)
			if err != nil {
				return // stopped
			}
			deliver(msg)
		}
	})
	return stop, nil
}

// nextWatched returns a watch's next message, retrying while the ordered
// consumer cannot be recreated (no leader yet); it fails only once the
// watch is stopped.
func (s *JetStream) nextWatched(ctx context.Context, it jetstream.MessagesContext, what string) (jetstream.Msg, error) {
	for {
		msg, err := it.Next()
		if err == nil {
			return msg, nil
		}
		if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil, cmp.Or(ctx.Err(), err)
		}
		s.log.Debug("store: "+what+" watch interrupted; resuming", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(watchRetry):
		}
	}
}
