package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	// defaultReplicaCheck is Options.ReplicaCheck's default.
	defaultReplicaCheck = 5 * time.Second
	// defaultClusterStartTimeout bounds how long Open waits for a cluster
	// member's JetStream quorum when ctx has no deadline: the other
	// members may be starting too (a cold start of the whole cluster).
	defaultClusterStartTimeout = 2 * time.Minute
	// attemptTimeout bounds one attempt of a cluster member to open its
	// buckets.
	attemptTimeout = 2 * time.Second
	// fullReplicas is the replica count of a cluster of three or more.
	fullReplicas = 3
)

// ClusterStatus is what a store knows of its JetStream cluster.
type ClusterStatus struct {
	// Member is true for an embedded server that is a cluster member.
	Member bool
	// Leader is the server name of the JetStream meta leader; empty while
	// there is no quorum (or for a single node).
	Leader string
	// Servers is how many JetStream servers the cluster has had (offline
	// ones included); 1 for a single node. With an external URL, the
	// servers the connection knows.
	Servers int
	// Online is how many of them this one has a route to now, itself
	// included.
	Online int
}

// ClusterStatus reports the cluster as this member sees it. It does no
// network request for an embedded server.
func (s *JetStream) ClusterStatus() ClusterStatus {
	switch {
	case s.srv == nil:
		n := len(s.nc.Servers())
		return ClusterStatus{Servers: n, Online: n}
	case !s.member:
		return ClusterStatus{Servers: 1, Online: 1}
	}
	st := ClusterStatus{Member: true, Servers: 1, Online: 1}
	jsz, err := s.srv.Jsz(nil)
	if err != nil || jsz.Meta == nil {
		return st
	}
	st.Leader = jsz.Meta.Leader
	st.Online = s.routedServers()
	st.Servers = max(jsz.Meta.Size, st.Online)
	return st
}

// routedServers counts this server and those it has a route to now. A
// route ends at once when its peer's process dies (the kernel resets the
// connection) and within the ping timeout when the peer is cut off; the
// meta group's own "offline" mark took more than 20 s after a kill -9.
func (s *JetStream) routedServers() int {
	rz, err := s.srv.Routez(nil)
	if err != nil {
		return 1
	}
	seen := map[string]bool{}
	for _, r := range rz.Routes {
		if r.RemoteName != "" {
			seen[r.RemoteName] = true
		}
	}
	return 1 + len(seen)
}

// newReplicas is the replica count of a bucket or stream created now.
func (s *JetStream) newReplicas() int {
	if s.replicas == 1 || s.ClusterStatus().Servers < fullReplicas {
		return 1
	}
	return fullReplicas
}

// mayRaise reports whether this store raises replicas: in a cluster (or
// on an external NATS) unless Options.Replicas is 1.
func (s *JetStream) mayRaise() bool {
	return s.replicas != 1 && (s.member || s.srv == nil)
}

// openAll opens the buckets and the audit stream. A single node does it
// at once. A cluster member first waits, up to wait, for the cluster's
// JetStream meta leader (it needs a quorum of the members); a member and a
// store on an external cluster retry while elections settle, and say in
// the log every few seconds what they wait for.
func (s *JetStream) openAll(ctx context.Context, retention, wait time.Duration) error {
	if s.srv != nil && !s.member {
		return s.openBuckets(ctx, retention, s.newReplicas())
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tell := time.NewTicker(5 * time.Second)
	defer tell.Stop()
	retry := time.NewTicker(250 * time.Millisecond)
	defer retry.Stop()
	var last error
	for {
		st := s.ClusterStatus()
		if st.Leader != "" || !s.member {
			// Each attempt has its own deadline: a request to create a
			// stream that another member creates at the same moment may
			// go unanswered; the next attempt finds the stream.
			actx, acancel := context.WithTimeout(ctx, attemptTimeout)
			last = s.openBuckets(actx, retention, s.newReplicas())
			acancel()
			if last == nil {
				if s.member {
					s.log.Info("store: joined the cluster", "server", s.name, "leader", st.Leader, "servers", st.Servers, "online", st.Online)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil { // stopped while waiting (SIGTERM)
				return fmt.Errorf("open store: %w", parent.Err())
			}
			if last == nil {
				last = fmt.Errorf("no JetStream leader (%d of %d servers seen)", st.Online, st.Servers)
			}
			return fmt.Errorf("open store: the cluster formed no quorum within %v: %w; start the other members, "+
				"and check the routes and that every member's route certificate comes from this edge CA", wait, last)
		case <-tell.C:
			s.log.Info("store: waiting for a quorum of the cluster (a majority of its members up and routed)", "servers", st.Servers, "online", st.Online)
		case <-retry.C:
		}
	}
}

// raiseLoop raises the buckets and the audit stream to three replicas
// once the cluster has three servers, checking now and every `every`
// until Close. Any member may do it: an update to the same configuration
// is idempotent.
func (s *JetStream) raiseLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr string
	for {
		if s.ClusterStatus().Servers >= fullReplicas {
			err := s.raise()
			select {
			case <-s.stopRaise:
				return // the error, if any, is Close's cancellation
			default:
			}
			switch {
			case err != nil && err.Error() != lastErr:
				s.log.Warn("store: could not raise replicas to 3; will retry", "err", err)
				lastErr = err.Error()
			case err == nil:
				lastErr = ""
			}
		}
		select {
		case <-s.stopRaise:
			return
		case <-t.C:
		}
	}
}

// raise sets every stream of the store that has fewer than three
// replicas to three.
func (s *JetStream) raise() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		select {
		case <-s.stopRaise:
			cancel()
		case <-ctx.Done():
		}
	}()
	var errs []string
	for _, name := range streamNames() {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		cfg := st.CachedInfo().Config
		if cfg.Replicas >= fullReplicas {
			continue
		}
		cfg.Replicas = fullReplicas
		if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		s.log.Info("store: now kept in 3 copies", "stream", name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// streamNames are the JetStream streams of the store: each bucket's and
// the audit trail.
func streamNames() []string {
	return []string{kvStream(BucketTokens), kvStream(BucketConnectors), kvStream(BucketSessions), kvStream(BucketEdges), StreamAudit}
}

// kvStream is the name of the stream under a key-value bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

// StreamReplicas returns how many servers hold a current copy of each
// stream of the store (its leader and the replicas caught up with it), by
// stream name: what a status display or a test wants to see.
func (s *JetStream) StreamReplicas(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for _, name := range streamNames() {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		n := 1
		if c := info.Cluster; c != nil && c.Leader != "" {
			for _, p := range c.Replicas {
				if p.Current {
					n++
				}
			}
		}
		out[name] = n
	}
	return out, nil
}

// LeadsBucket reports whether this member's server is the leader of
// bucket's stream now: the server that answers every read of it (reads
// go to the leader), from what it holds, until it steps down.
func (s *JetStream) LeadsBucket(bucket string) bool {
	return s.srv != nil && s.member && s.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, kvStream(bucket))
}
