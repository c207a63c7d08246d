package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// create stores v under key, which must be new; what names the kind of
// value in errors. A try that gets no answer is made again, up to
// writeAttempts times, each bounded by attemptTimeout: while a cluster
// moves a bucket to new replicas (the raise to R3 when a third server
// joins) a write can go unanswered for the client's whole timeout, and
// succeed a second later. A write that did land before its answer was
// lost is found on the next try as the same value under the key: done.
func create(ctx context.Context, kv jetstream.KeyValue, what, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("create %s %s: %w", what, key, err)
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		_, err = kv.Create(actx, key, b)
		if errors.Is(err, jetstream.ErrKeyExists) && attempt > 1 {
			if e, gerr := kv.Get(actx, key); gerr == nil && bytes.Equal(e.Value(), b) {
				err = nil // our own earlier try
			}
		}
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrKeyExists):
			return fmt.Errorf("create %s %s: %w; generate a new id", what, key, ErrExists)
		case attempt < writeAttempts && ctx.Err() == nil && unanswered(err):
			continue
		}
		return fmt.Errorf("create %s %s: %w", what, key, err)
	}
}

// writeAttempts bounds the tries of a write that goes unanswered: 5 of
// attemptTimeout (2 s) outlast the leader elections measured after a
// member's loss (about 6 s).
const writeAttempts = 5

// unanswered reports whether err says a request got no answer in time
// (rather than a refusal), so that trying again may succeed.
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
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

// retryUnanswered runs try, each time bounded by attemptTimeout, until it
// succeeds, fails otherwise than unanswered, ctx ends, or writeAttempts
// tries have gone unanswered (about the length of a leader election).
func retryUnanswered(ctx context.Context, try func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := try(actx)
		cancel()
		if err == nil || attempt >= writeAttempts || ctx.Err() != nil || !unanswered(err) {
			return err
		}
	}
}

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

// list decodes the latest value of every key in kv.
func list[T any](ctx context.Context, kv jetstream.KeyValue) ([]T, error) {
	var out []T
	err := entries(ctx, kv, func(e jetstream.KeyValueEntry) error {
		var v T
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return fmt.Errorf("decode key %s at revision %d: %w", e.Key(), e.Revision(), err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// entries calls fn with the latest entry of every key in kv, stopping at
// fn's first error. It reads the bucket with one watcher (one ordered
// consumer) rather than one request per key.
func entries(ctx context.Context, kv jetstream.KeyValue, fn func(jetstream.KeyValueEntry) error) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer stopWatcher(w)
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed before the values were read; retry")
			}
			if e == nil { // all current values delivered
				return nil
			}
			if err := fn(e); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
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
