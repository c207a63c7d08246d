package edge

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pipe"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// handshakeTimeout bounds what a client must send before the edge knows
// where it goes: the first bytes of an HTTP request, a TLS ClientHello, a
// SOCKS5 greeting and request.
const handshakeTimeout = 10 * time.Second

// front is one shared public listener: it serves connections until its
// listener is closed.
type front interface {
	// serve accepts and serves connections until the listener is closed.
	serve(ctx context.Context)
	// drain stops taking new requests and starts letting live ones finish;
	// it does not wait.
	drain()
	// close ends what drain left and waits for it.
	close()
}

// fronts holds the edge's shared listeners and what they route. It is set
// up by open before the edge is ready and read-only afterwards.
type fronts struct {
	hosts    names              // http Host → service
	sni      names              // TLS server name → service
	policies map[string]*policy // by service; every configured service has one
	list     []front
	addrs    []net.Addr
}

// open prepares policies and routes, and opens every shared listener with
// listen (which keeps the listener for Run to close).
func (f *fronts) open(e *Edge, listen func(what, addr string) (net.Listener, error)) error {
	f.policies = make(map[string]*policy, len(e.cfg.Services))
	f.hosts = names{}
	f.sni = names{}
	for name, svc := range e.cfg.Services {
		p, err := newPolicy(name, svc.Policy, e.log, e.now)
		if err != nil {
			return err
		}
		f.policies[name] = p
		for _, h := range svc.Hosts {
			f.hosts.add(h, name)
		}
		for _, h := range svc.SNI {
			f.sni.add(h, name)
		}
	}
	for i, lc := range e.cfg.Listeners {
		what := fmt.Sprintf("%s listener (listeners[%d])", lc.Kind, i)
		var fr front
		var err error
		var l net.Listener
		switch lc.Kind {
		case config.KindHTTP, config.KindHTTPS:
			var certs *certStore
			if lc.Kind == config.KindHTTPS {
				if certs, err = loadCertStore(lc.Certificates, e.log); err != nil {
					return fmt.Errorf("%s: %w", what, err)
				}
			}
			if l, err = listen(what, lc.Listen); err != nil {
				return err
			}
			fr, err = newHTTPFront(e, lc, l, certs)
		case config.KindTLS:
			if l, err = listen(what, lc.Listen); err != nil {
				return err
			}
			fr = &tlsFront{e: e, l: l}
		case config.KindSOCKS5:
			var users map[string][sha256.Size]byte
			if users, err = loadSOCKSUsers(lc.Users); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if l, err = listen(what, lc.Listen); err != nil {
				return err
			}
			fr = &socksFront{e: e, l: l, users: users}
		default:
			return fmt.Errorf("%s: unknown kind", what)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		f.list = append(f.list, fr)
		f.addrs = append(f.addrs, l.Addr())
	}
	return nil
}

// serve starts every front on loops.
func (f *fronts) serve(ctx context.Context, loops *sync.WaitGroup) {
	for _, fr := range f.list {
		loops.Go(func() { fr.serve(ctx) })
	}
}

// drain lets every front start draining.
func (f *fronts) drain() {
	for _, fr := range f.list {
		fr.drain()
	}
}

// close ends every front and waits for them.
func (f *fronts) close() {
	for _, fr := range f.list {
		fr.close()
	}
}

// ListenerAddr is the address of the shared listener at index i of the
// config's Listeners; valid after Ready.
func (e *Edge) ListenerAddr(i int) net.Addr {
	if i < 0 || i >= len(e.fronts.addrs) {
		return nil
	}
	return e.fronts.addrs[i]
}

// names maps host names, exact or "*.suffix" (any one label before
// suffix), to services. It is filled before the edge is ready and only read
// afterwards.
type names struct {
	exact map[string]string
	wild  map[string]string // by suffix, without "*."
}

func (n *names) add(pattern, service string) {
	if n.exact == nil {
		n.exact, n.wild = map[string]string{}, map[string]string{}
	}
	p := config.NormalizeHost(pattern)
	if suffix, ok := strings.CutPrefix(p, "*."); ok {
		n.wild[suffix] = service
		return
	}
	n.exact[p] = service
}

// lookup returns the service for host (no port); an exact name wins over a
// wildcard.
func (n names) lookup(host string) (string, bool) {
	h := config.NormalizeHost(host)
	if s, ok := n.exact[h]; ok {
		return s, true
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		s, ok := n.wild[h[i+1:]]
		return s, ok
	}
	return "", false
}

// reach admits c to service by its policy and opens a stream to a
// connector that offers it. On success the stream holds the policy's slot
// until it is closed. A refusal is counted and logged here, once; the
// caller tells the client in its protocol's words.
func (e *Edge) reach(service string, c client) (*streamConn, *refusedError) {
	release, ref := e.admit(service, c)
	if ref != nil {
		return nil, ref
	}
	st, ref := e.openStream(service, c)
	if ref != nil {
		release()
		return nil, ref
	}
	st.release = release
	return st, nil
}

// reachAddress opens a stream to a destination address that a client
// named instead of a service (SOCKS). The edge never knows back-end
// addresses: it asks each live tunnel in turn, and only a connector whose
// allow-list holds the address accepts, naming the service it serves it
// as; that service's policy then decides. It returns the refusal with
// ReasonUnknownService if no connector allows the address.
func (e *Edge) reachAddress(address string, c client) (*streamConn, *refusedError) {
	e.mu.Lock()
	tried := make(map[string]bool, len(e.tunnels))
	var sessions []*tunnel.Session
	for sess, info := range e.tunnels {
		// One tunnel per connector is enough to learn its answer.
		if !tried[info.connectorID] {
			tried[info.connectorID] = true
			sessions = append(sessions, sess)
		}
	}
	e.mu.Unlock()
	for _, sess := range sessions {
		st, err := sess.Open(wire.StreamOpen{Client: c.addr.String(), Address: address})
		if err != nil {
			continue
		}
		if err := st.Accepted(); err != nil {
			st.Close()
			continue
		}
		service := st.Answer().Service
		release, ref := e.admit(service, c)
		if ref != nil {
			st.Close()
			return nil, ref
		}
		e.mu.Lock()
		connector := ""
		if info := e.tunnels[sess]; info != nil {
			connector = info.connectorID
		}
		e.mu.Unlock()
		return &streamConn{Stream: st, e: e, sess: sess, service: service, connector: connector, client: c, release: release}, nil
	}
	return nil, e.refused(refuse(ReasonUnknownService, "", "no connector allows address %s", address), c)
}

// admit applies service's policy to c; see policy.admit. An unknown
// service is refused.
func (e *Edge) admit(service string, c client) (func(), *refusedError) {
	p, ok := e.fronts.policies[service]
	if !ok {
		return nil, e.refused(refuse(ReasonUnknownService, service, "no service named %q", service), c)
	}
	release, ref := p.admit(service, c, e.now())
	if ref != nil {
		return nil, e.refused(ref, c)
	}
	return release, nil
}

// openStream opens a stream to service through a tunnel that offers it,
// without applying a policy (the caller has). The stream's first Read
// returns the connector's refusal, if any, as a *wire.Refusal.
func (e *Edge) openStream(service string, c client) (*streamConn, *refusedError) {
	sess, ok := e.routes.Pick(service)
	if !ok {
		return nil, e.refused(refuse(ReasonNoConnector, service, "no connector offers service %s right now; try again later", service), c)
	}
	e.mu.Lock()
	info := e.tunnels[sess]
	e.mu.Unlock()
	connector := ""
	if info != nil {
		connector = info.connectorID
	}
	st, err := sess.Open(wire.StreamOpen{Service: service, Client: c.addr.String()})
	if err != nil {
		ref := refuse(ReasonTunnel, service, "service %s: the tunnel to its connector failed; try again", service)
		e.log.Warn("client refused: tunnel failed", "via", c.via, "service", service, "client", c.addr.String(), "connector", connector, "err", err)
		e.refusals.add(ref.reason)
		return nil, ref
	}
	return &streamConn{Stream: st, e: e, sess: sess, service: service, connector: connector, client: c}, nil
}

// refused counts and logs a refusal and returns it.
func (e *Edge) refused(ref *refusedError, c client) *refusedError {
	e.refusals.add(ref.reason)
	msg := "client refused: " + ref.msg
	if ref.reason == ReasonNoConnector {
		msg = "client refused: no connector offers the service"
	}
	args := []any{"via", c.via, "client", c.addr.String(), "reason", string(ref.reason)}
	if ref.service != "" {
		args = append(args, "service", ref.service)
	}
	e.log.Warn(msg, args...)
	return ref
}

// streamConn is a stream opened for one client: a net.Conn with
// CloseWrite for pipe.Join. Closing it gives back the client's policy slot.
type streamConn struct {
	*tunnel.Stream
	e         *Edge
	sess      *tunnel.Session
	service   string
	connector string
	client    client
	// release gives back the policy slot; nil if none is held.
	release func()
	// onRefusal, if set, is called once with the connector's refusal
	// before the Read that returns it: a front tells its client there.
	onRefusal func(*wire.Refusal)

	refusalOnce sync.Once
}

// Read reads the back-end's bytes; the first Read returns the connector's
// refusal, if any, as a *wire.Refusal.
func (s *streamConn) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	return n, s.checkRefusal(err)
}

// TryRead is Read without waiting; see tunnel.Stream.TryRead.
func (s *streamConn) TryRead(b []byte) (int, bool, error) {
	n, wait, err := s.Stream.TryRead(b)
	return n, wait, s.checkRefusal(err)
}

// Accepted waits for the connector's answer; see tunnel.Stream.Accepted.
func (s *streamConn) Accepted() error {
	return s.checkRefusal(s.Stream.Accepted())
}

// checkRefusal handles the connector's refusal, once, if err is one, and
// returns err.
func (s *streamConn) checkRefusal(err error) error {
	var ref *wire.Refusal
	if err != nil && errors.As(err, &ref) {
		s.refusalOnce.Do(func() { s.connectorRefused(ref) })
	}
	return err
}

// Write sends client bytes. A connector that refuses a stream resets it
// after its reply, so a Write can fail before any Read has seen the
// reply: Write then returns the refusal, which says why, instead of the
// reset.
func (s *streamConn) Write(b []byte) (int, error) {
	n, err := s.Stream.Write(b)
	if err != nil && errors.Is(err, tunnel.ErrReset) {
		// The reply came before the reset, and a reset stream's Read does
		// not block.
		var ref *wire.Refusal
		if _, rerr := s.Read(nil); errors.As(rerr, &ref) {
			return n, rerr
		}
	}
	return n, err
}

// connectorRefused counts the connector's refusal, stops routing to a
// draining connector, and tells the front.
func (s *streamConn) connectorRefused(ref *wire.Refusal) {
	e := s.e
	e.refusals.add(ReasonConnector)
	if ref.Code == wire.CodeDraining && e.routes.Remove(s.sess) {
		// The connector is shutting down: send later clients elsewhere.
		e.log.Info("connector draining: no more clients routed to this tunnel", "connector", s.connector)
	}
	if s.onRefusal != nil {
		s.onRefusal(ref)
	}
}

// Close closes the stream and gives back the policy slot.
func (s *streamConn) Close() error {
	err := s.Stream.Close()
	if s.release != nil {
		s.release()
	}
	return err
}

// join carries client connection c over st, logs the connection when it
// ends, stops tracking c (see accept) and then calls then, if not nil. It
// returns at once (pipe.Start): no goroutine waits for the exchange, and
// Shutdown's wait for handlers includes it. It owns c and st and closes
// them.
func (e *Edge) join(c net.Conn, st *streamConn, start time.Time, then func()) {
	e.handlers.Add(1)
	x := pipe.Start(c, st, func(res pipe.Result) {
		defer e.handlers.Done()
		args := []any{"via", st.client.via, "service", st.service, "client", st.client.addr.String(), "connector", st.connector,
			"bytes_in", res.AToB, "bytes_out", res.BToA, "duration", e.now().Sub(start).Round(time.Microsecond).String()}
		var ref *wire.Refusal
		switch {
		case errors.As(res.Err, &ref):
			e.log.Warn("client refused by connector", append(args, "code", ref.Code.String(), "reason", ref.Reason)...)
		case res.Err != nil:
			e.log.Info("client connection closed", append(args, "err", res.Err)...)
		default:
			e.log.Info("client connection closed", args...)
		}
		e.clients.Done(c)
		if then != nil {
			then()
		}
	})
	// A drain that times out cuts the whole exchange off, not just c.
	e.clients.Attach(c, x)
}

// nextConn accepts the next connection on l. A transient error (out of
// file descriptors) is logged and retried after a pause that doubles, up
// to a second. ok is false once l is closed or ctx has ended.
func (e *Edge) nextConn(ctx context.Context, what string, l net.Listener) (c net.Conn, ok bool) {
	var pause time.Duration
	for {
		c, err := l.Accept()
		if err == nil {
			return c, true
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, false
		}
		pause = min(max(2*pause, 5*time.Millisecond), time.Second)
		e.log.Warn("accept failed; retrying", "listener", what, "err", err, "pause", pause)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, false
		}
	}
}

// accept runs serve for each connection accepted on l until l is closed,
// tracking each for the drain. A transient accept error (out of file
// descriptors) is retried after a pause. serve owns the connection; it
// returns true if it handed the connection to join, which then stops
// tracking it when the exchange ends.
func (e *Edge) accept(ctx context.Context, what string, l net.Listener, serve func(net.Conn) (joined bool)) {
	for {
		c, ok := e.nextConn(ctx, what, l)
		if !ok {
			return
		}
		e.clients.Add(c)
		e.handlers.Go(func() {
			if !serve(c) {
				e.clients.Done(c)
			}
		})
	}
}
