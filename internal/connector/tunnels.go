package connector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

func (c *Connector) tunnelConfig() tunnel.Config {
	return tunnel.Config{
		KeepaliveInterval: c.cfg.Tunnel.KeepaliveInterval,
		KeepaliveTimeout:  c.cfg.Tunnel.KeepaliveTimeout,
		HandshakeTimeout:  c.cfg.Tunnel.DialTimeout,
		ReceiveBudget:     int64(c.cfg.Tunnel.ReceiveBudgetMiB) << 20,
	}
}

// keepTunnel keeps one tunnel (of the pool's, slot counts from 0) to the
// edge at addr up until ctx ends: dial, serve streams until the tunnel
// dies, wait a backoff, again.
func (c *Connector) keepTunnel(ctx context.Context, addr string, slot int, id identity) {
	log := c.log.With("edge", addr)
	key := addr
	if c.cfg.Tunnel.Pool > 1 {
		log = log.With("tunnel", slot+1)
		key = fmt.Sprintf("%s#%d", addr, slot+1)
	}
	failures := 0
	// prev is a tunnel whose offer a reload changed: it serves on until
	// the tunnel that announces the new offer is up, then finishes its
	// streams (retire).
	var prev *tunnel.Session
	defer func() {
		if prev != nil {
			c.retire(ctx, prev, log)
		}
	}()
	for ctx.Err() == nil {
		// The certificate renewal last left: a tunnel made after a
		// renewal is made with the renewed certificate.
		cert := c.currentCert()
		if c.expired(&cert) {
			err := ExpiredError(&cert)
			log.Error("the connector's certificate has expired; stopping", "err", err)
			c.stop(err)
			return
		}
		// Taken before the hello is made: a reload after it is seen.
		offers := c.offerChanges()
		sess, err := c.dialTunnel(ctx, addr, pki.ClientTLSConfig(id.ca, id.pin, &cert, nil))
		c.metrics.TunnelDialed(addr, err)
		if err == nil {
			start := time.Now()
			log.Info("tunnel up")
			if prev != nil {
				c.retire(ctx, prev, log)
				prev = nil
			}
			if c.serve(sess, addr, key, offers) {
				log.Info("services changed: announcing them on a new tunnel; this one finishes its streams")
				prev = sess
				failures = 0
				continue
			}
			upFor := time.Since(start).Round(time.Millisecond).String()
			if ctx.Err() != nil {
				log.Info("tunnel closed", "up_for", upFor)
				return
			}
			// Why, when the edge broke it: silent, not reading, or
			// breaking the multiplexer's rules.
			args := []any{"up_for", upFor}
			if cause := sess.Cause(); cause != nil {
				args = append(args, "cause", cause.Error())
			}
			log.Warn("tunnel down", args...)
			// The edge answered a handshake: it is up now, however
			// short this tunnel's life, so the next try starts again
			// from the shortest wait. (Counting short tunnels as
			// failures made a connector wait up to backoff_max for an
			// edge that had been back for long after a crash loop.)
			failures = 0
		} else if ref := (*wire.Refusal)(nil); errors.As(err, &ref) && ref.Code == wire.CodeRevoked {
			log.Error("the edge refuses this connector: it was revoked; stopping", "reason", ref.Reason)
			c.stop(fmt.Errorf("revoked: %s", ref.Reason))
			return
		} else if edgeSaysExpired(err) {
			err := ExpiredError(&cert)
			log.Error("the edge refuses this connector's certificate: it has expired; stopping", "err", err)
			c.stop(err)
			return
		} else if ctx.Err() == nil {
			log.Warn("tunnel dial failed", "err", err, "attempt", failures+1)
		}
		if ctx.Err() != nil {
			return
		}
		wait := Backoff(failures, c.cfg.Tunnel.BackoffMin, c.cfg.Tunnel.BackoffMax, rand.Float64())
		failures++
		log.Info("reconnecting", "in", wait.Round(time.Millisecond).String())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// retireTick is how often a retiring tunnel is checked for streams left.
const retireTick = 100 * time.Millisecond

// retire lets sess, a tunnel whose offer a reload replaced, finish its
// streams for up to the drain timeout (the edge routes no new client to
// it once the new offer's tunnel is up), then shuts it down; in a
// goroutine of c.handlers, which ends with ctx too. It owns sess.
func (c *Connector) retire(ctx context.Context, sess *tunnel.Session, log *slog.Logger) {
	c.handlers.Go(func() {
		deadline := time.NewTimer(c.cfg.DrainTimeout)
		defer deadline.Stop()
		tick := time.NewTicker(retireTick)
		defer tick.Stop()
	wait:
		for sess.NumStreams() > 0 {
			select {
			case <-sess.Done():
				break wait
			case <-ctx.Done():
				break wait
			case <-deadline.C:
				log.Warn("drain timeout: closing the older tunnel's streams still open", "count", sess.NumStreams())
				break wait
			case <-tick.C:
			}
		}
		sess.Shutdown()
		log.Info("older tunnel closed; the new one carries the services")
	})
}

// Backoff returns the wait before reconnect attempt n (from 0): it doubles
// from min up to max, and jitter (in [0,1)) spreads it over its upper half
// so that connectors restarted together do not reconnect together.
func Backoff(n int, min, max time.Duration, jitter float64) time.Duration {
	d := min
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = minDuration(d, max)
	return d/2 + time.Duration(jitter*float64(d/2))
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

// dialTunnel dials addr, runs TLS and the handshake, and returns the session.
func (c *Connector) dialTunnel(ctx context.Context, addr string, tlsConf *tls.Config) (*tunnel.Session, error) {
	cfg := c.tunnelConfig()
	dctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	tc, err := c.dialTLS(dctx, addr, tlsConf)
	if err != nil {
		return nil, err
	}
	hello := wire.Hello{Instance: c.instance, Services: c.current().offered()}
	sess, welcome, err := tunnel.Client(dctx, tc, hello, cfg)
	if err != nil {
		return nil, fmt.Errorf("tunnel handshake with edge %s: %w", addr, err)
	}
	c.learnEdge(addr, welcome.EdgeID)
	for _, r := range welcome.Refused {
		if _, told := c.told.LoadOrStore(addr+"/"+r.Service, true); !told {
			c.log.Warn("the edge refuses a service this connector offers; its other services are served", "edge", addr,
				"service", r.Service, "reason", r.Reason)
		}
	}
	return sess, nil
}

// dialTLS dials the edge at addr (host:port of its tunnel port, or a
// wss:// address of its https listener: see dialWebSocket) and runs the TLS handshake with conf,
// both within ctx. The caller owns the connection and closes it.
func (c *Connector) dialTLS(ctx context.Context, addr string, conf *tls.Config) (*tls.Conn, error) {
	raw, err := c.EdgeConn(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial edge %s: %w", addr, err)
	}
	tc := tls.Client(tunnel.NewTransport(raw), conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS with edge %s: %w", addr, err)
	}
	return tc, nil
}

// EdgeConn opens the connection the tunnel's TLS runs on to the edge at
// addr, within ctx: TCP to a host:port, or a WebSocket to a wss://
// address, through the connector's proxy if it has one. The caller owns
// the connection and closes it.
func (c *Connector) EdgeConn(ctx context.Context, addr string) (net.Conn, error) {
	if wstunnel.IsAddress(addr) {
		return c.dialWebSocket(ctx, addr, c.EdgeDial)
	}
	return c.EdgeDial(ctx, "tcp", addr)
}

// EdgeProxy returns the proxy the connection to the edge at addr goes
// through (see EdgeConn), nil for none.
func (c *Connector) EdgeProxy(addr string) (*url.URL, error) {
	hostPort := addr
	if wstunnel.IsAddress(addr) {
		var err error
		if hostPort, err = wstunnel.HostPort(addr); err != nil {
			return nil, err
		}
	}
	return c.edgeDialer.ProxyFor(hostPort)
}

// serve accepts the edge's streams on sess, the tunnel to edge kept under
// key, until the session ends, and closes it then; or until offers is
// closed (a reload changed the services offered): it then returns true
// with sess still serving, for the caller to retire once a tunnel with
// the new offer is up.
func (c *Connector) serve(sess *tunnel.Session, edge, key string, offers <-chan struct{}) (reannounce bool) {
	// Counted before WaitTunnels and /readyz can see it, and until the
	// session ends (a re-announced one lives on a while).
	c.metrics.TunnelUp(edge)
	sess.AfterEnd(func() { c.metrics.TunnelDown(edge) })
	c.setUp(key, sess)
	accepting := make(chan struct{})
	c.handlers.Go(func() {
		defer close(accepting)
		c.acceptStreams(sess, edge)
	})
	select {
	case <-accepting:
	case <-offers:
		return true
	}
	c.setUp(key, nil)
	sess.Close()
	return false
}

// acceptStreams serves each stream the edge opens on sess until the
// session ends.
func (c *Connector) acceptStreams(sess *tunnel.Session, edge string) {
	for {
		st, err := sess.Accept()
		if err != nil {
			return
		}
		c.track(st)
		c.handlers.Go(func() {
			if !c.handleStream(st, edge) {
				c.streams.Done(st)
			}
		})
	}
}

// track counts st among the streams a drain waits for, unless the drain
// has begun: Run's wait must not race a late stream's count (the edge's
// membership stream, sent right after every hello, made that likely), and
// a stream that comes while draining is refused, not waited for.
func (c *Connector) track(st *tunnel.Stream) {
	c.tunnels.Lock()
	defer c.tunnels.Unlock()
	if !c.tunnels.draining {
		c.streams.Add(st)
	}
}

// dialWebSocket opens a tunnel WebSocket to addr, a wss:// address, with
// dial for the raw connection. The outer TLS (the HTTPS port's) is
// verified against tunnel.websocket_ca if set, else the system's roots;
// the tunnel's own TLS inside it is pinned as on the tunnel port.
func (c *Connector) dialWebSocket(ctx context.Context, addr string, dial wstunnel.DialFunc) (net.Conn, error) {
	var roots *x509.CertPool
	if file := c.cfg.Tunnel.WebSocketCA; file != "" {
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("tunnel.websocket_ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tunnel.websocket_ca: %s holds no PEM certificate", file)
		}
	}
	return wstunnel.Dial(ctx, addr, dial, roots)
}
