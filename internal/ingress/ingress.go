// Package ingress serves the edge's public listeners, one file per
// protocol: tcp (a port per service), http and https (routed by Host, with
// WebSocket access to services), tls passthrough (routed by SNI) and
// SOCKS5. Each listener accepts only its protocol, admits clients and opens
// streams through a Dispatcher (the edge), and carries each client's bytes
// over its stream with pipe; it never knows the edge itself.
//
//	set, err := ingress.Open(cfg, dispatcher, listen, log)
//	set.Serve(ctx)                  // accept loops, owned by set
//	...
//	left := set.Drain(timeout)      // stop accepting; let live exchanges finish
//	// close the tunnels, then:
//	set.Wait()                      // every exchange has ended
package ingress

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pipe"
	"github.com/sallyport/sallyport/internal/route"
	"github.com/sallyport/sallyport/internal/slowdown"
	"github.com/sallyport/sallyport/internal/tlsfiles"
	"github.com/sallyport/sallyport/internal/wire"
)

// handshakeTimeout bounds what a client must send before the edge knows
// where it goes: the first bytes of an HTTP request, a TLS ClientHello, a
// SOCKS5 greeting and request.
const handshakeTimeout = 10 * time.Second

// Dispatcher is what the listeners need of the edge: admitting clients to
// services and opening streams to them. Every method is safe for
// concurrent use. A refusal it returns has been counted and logged; the
// listener only tells its client, in its protocol's words (answerFor).
type Dispatcher interface {
	// Admit applies service's policy to c. On success the caller holds
	// one of the service's slots and must call release once. An unknown
	// service is refused.
	Admit(service string, c admission.Client) (release func(), ref *admission.Refusal)
	// Open opens a stream to service through a tunnel that offers it,
	// without applying the policy (the caller has, or does per request).
	Open(service string, c admission.Client) (Stream, *admission.Refusal)
	// OpenAddress opens a stream to a back-end address a client named
	// instead of a service (SOCKS): a connector whose allow-list holds it
	// names the service, dialling nothing; that service's policy is
	// applied, and only then is the stream opened. The stream holds the
	// slot. ReasonAddressNotAllowed if no connector allows it.
	OpenAddress(address string, c admission.Client) (Stream, *admission.Refusal)
	// OpenSession redeems a one-time session token (consuming it, once)
	// and opens a stream to the session's service that holds the
	// policy's slot. A refusal's Msg is what the client is told; it never
	// repeats the token.
	OpenSession(token string, c admission.Client) (Stream, *admission.Refusal)
	// RedeemLink consumes an HTTP session's link presented on host (a
	// service's), once, and returns the value of the cookie that stands
	// for the session from then on, and when it ends. A refusal's Msg is
	// what the client is told; it never repeats the token.
	RedeemLink(token, host string, c admission.Client) (cookie string, expires time.Time, ref *admission.Refusal)
	// SessionCookie returns the session that a session cookie's value
	// stands for, if it admits requests to host now. It reads no store.
	SessionCookie(host, value string) (session string, ok bool)
	// Refused counts and logs a refusal a listener made itself, and
	// returns it.
	Refused(ref *admission.Refusal, c admission.Client) *admission.Refusal
	// Count counts a refusal that a listener logs itself (in summary,
	// when a flood would make a line per refusal too many).
	Count(r admission.Reason)
	// Tunnel takes a connector's tunnel connection that came in a
	// WebSocket on an https listener (wstunnel.Path), still in its
	// opening: the edge serves it as one from its tunnel port, until ctx
	// ends. It returns at once; the edge owns c and closes it.
	Tunnel(ctx context.Context, c net.Conn)
}

// Stream is a stream to a service's back-end, opened for one client. It is
// a net.Conn with a half-close for pipe. Its first Read (or Accepted)
// returns the connector's refusal, if any, as a *wire.Refusal.
type Stream interface {
	net.Conn
	CloseWrite() error
	// Accepted waits for the connector's answer: nil once it has dialed
	// the back-end.
	Accepted() error
	// Service and Connector name the stream's two ends, for logs.
	Service() string
	Connector() string
	// OnRefusal sets f to be called once with the connector's refusal,
	// before the Read that returns it; call it before the stream is read.
	OnRefusal(f func(*wire.Refusal))
	// Hold makes Close call release (a policy slot) once.
	Hold(release func())
}

// ListenFunc opens a listener; what names it in errors ("service db").
type ListenFunc func(what, addr string) (net.Listener, error)

// listener is one of the Set's listeners: it serves connections until its
// net.Listener is closed.
type listener interface {
	// serve accepts and serves connections until the listener is closed.
	serve(ctx context.Context)
	// drain stops taking new requests and starts letting live ones
	// finish; it does not wait.
	drain()
	// close ends what drain left and waits for it.
	close()
}

// Set is the edge's public listeners: a tcp port per service that has
// one, and the shared listeners of the config's Listeners. Open it, Serve
// it once, then Drain and Wait.
type Set struct {
	d     Dispatcher
	log   *slog.Logger
	now   func() time.Time
	hosts route.Names     // http Host → service
	sni   route.Names     // TLS server name → service
	known map[string]bool // every configured service
	anyCA bool            // some service's policy asks for a client certificate
	// anyHTTPS is set if an https listener exists: HTTP session links are
	// then redeemed over https only.
	anyHTTPS bool
	list     []listener
	nls      []net.Listener // every listener the Set opened, closed by Drain
	svc      map[string]net.Addr
	shared   []net.Addr // by index in the config's Listeners

	// loops counts the accept loops; handlers every goroutine serving a
	// connection and every exchange that join started.
	loops    sync.WaitGroup
	handlers sync.WaitGroup
	// clients tracks live client connections for the drain; caps bounds
	// them.
	clients pipe.Tracker
	caps    *caps
	// live lists the exchanges under way, for the admin dashboard.
	live liveConns
	// sessionBackoff slows the refusals of session links to an address
	// that keeps presenting bad ones.
	sessionBackoff slowdown.Failures
}

// Open opens every public listener of cfg (a validated config) with
// listen, which the caller may use to close them all if Open fails.
func Open(cfg config.Edge, d Dispatcher, listen ListenFunc, log *slog.Logger) (*Set, error) {
	s := &Set{d: d, log: log, now: time.Now, known: map[string]bool{}, svc: map[string]net.Addr{},
		caps: newCaps(cfg.Limits.MaxClients, cfg.Limits.MaxClientsPerSource)}
	for name, svc := range cfg.Services {
		s.known[name] = true
		for _, h := range svc.Hosts {
			s.hosts.Add(h, name)
		}
		for _, h := range svc.SNI {
			s.sni.Add(h, name)
		}
		if svc.Policy.ClientCA != "" {
			s.anyCA = true
		}
	}
	open := func(what, addr string) (net.Listener, error) {
		l, err := listen(what, addr)
		if err == nil {
			s.nls = append(s.nls, l)
		}
		return l, err
	}
	for name, svc := range cfg.Services {
		if svc.Listen == "" {
			// Reached only through shared listeners: a port of its own
			// would skip their checks.
			continue
		}
		l, err := open("service "+name, svc.Listen)
		if err != nil {
			return nil, err
		}
		s.svc[name] = l.Addr()
		s.list = append(s.list, &tcpListener{s: s, service: name, l: l})
	}
	for _, lc := range cfg.Listeners {
		s.anyHTTPS = s.anyHTTPS || lc.Kind == config.KindHTTPS
	}
	for i, lc := range cfg.Listeners {
		what := fmt.Sprintf("%s listener (listeners[%d])", lc.Kind, i)
		var ln listener
		var err error
		var l net.Listener
		switch lc.Kind {
		case config.KindHTTP, config.KindHTTPS:
			var certs *tlsfiles.Certs
			if lc.Kind == config.KindHTTPS {
				pairs := make([]tlsfiles.Pair, len(lc.Certificates))
				for i, c := range lc.Certificates {
					pairs[i] = tlsfiles.Pair{Cert: c.Cert, Key: c.Key}
				}
				if certs, err = tlsfiles.LoadCerts(pairs, log); err != nil {
					return nil, fmt.Errorf("%s: %w", what, err)
				}
			}
			if l, err = open(what, lc.Listen); err != nil {
				return nil, err
			}
			ln, err = newHTTPListener(s, lc, l, certs)
		case config.KindTLS:
			if l, err = open(what, lc.Listen); err != nil {
				return nil, err
			}
			ln = &tlsListener{s: s, l: l}
		case config.KindSOCKS5:
			var users map[string][sha256.Size]byte
			if users, err = loadSOCKSUsers(lc.Users); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			if l, err = open(what, lc.Listen); err != nil {
				return nil, err
			}
			ln = &socksListener{s: s, l: l, users: users}
		default:
			return nil, fmt.Errorf("%s: unknown kind", what)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		s.list = append(s.list, ln)
		s.shared = append(s.shared, l.Addr())
	}
	return s, nil
}

// ServiceAddr is the address of a service's own tcp port; nil if it has
// none (it is reached only through shared listeners).
func (s *Set) ServiceAddr(service string) net.Addr { return s.svc[service] }

// ListenerAddr is the address of the shared listener at index i of the
// config's Listeners; nil if there is none.
func (s *Set) ListenerAddr(i int) net.Addr {
	if i < 0 || i >= len(s.shared) {
		return nil
	}
	return s.shared[i]
}

// Shared is how many shared listeners there are.
func (s *Set) Shared() int { return len(s.shared) }

// Serve starts every listener's accept loop and returns; the loops end
// when Drain closes the listeners.
func (s *Set) Serve(ctx context.Context) {
	for _, ln := range s.list {
		s.loops.Go(func() { ln.serve(ctx) })
	}
}

// Drain closes every listener, lets live client connections finish for up
// to timeout, then cuts off what is left and ends the http listeners'
// requests. It returns how many connections it cut off. Exchanges cut off
// end once their tunnels close; Wait waits for them.
func (s *Set) Drain(timeout time.Duration) (left int) {
	for _, l := range s.nls {
		l.Close()
	}
	for _, ln := range s.list {
		ln.drain()
	}
	s.loops.Wait()
	left = s.clients.Wait(timeout)
	for _, ln := range s.list {
		ln.close()
	}
	return left
}

// Wait waits for every goroutine serving a connection, and every exchange,
// to end.
func (s *Set) Wait() { s.handlers.Wait() }

// client describes a client connection for the Dispatcher.
func client(c net.Conn, via string) admission.Client {
	return admission.Client{Addr: c.RemoteAddr(), Via: via}
}

// reach admits cl to service and opens a stream to it that holds the
// policy's slot until it is closed.
func (s *Set) reach(service string, cl admission.Client) (Stream, *admission.Refusal) {
	release, ref := s.d.Admit(service, cl)
	if ref != nil {
		return nil, ref
	}
	st, ref := s.d.Open(service, cl)
	if ref != nil {
		release()
		return nil, ref
	}
	st.Hold(release)
	return st, nil
}

// join carries client connection c over st, logs the connection when it
// ends, stops tracking c (see accept) and then calls then, if not nil. It
// returns at once (pipe.Start): no goroutine waits for the exchange, and
// Wait includes it. It owns c and st and closes them.
func (s *Set) join(c net.Conn, st Stream, cl admission.Client, start time.Time, then func()) {
	s.handlers.Add(1)
	entry := s.live.add(LiveConn{Service: st.Service(), Connector: st.Connector(), Client: cl.Addr.String(), Via: cl.Via, Since: start})
	x := pipe.Start(c, st, func(res pipe.Result) {
		defer s.handlers.Done()
		// Its place is free before the line that says it ended.
		s.live.remove(entry)
		s.untrack(c)
		args := []any{"via", cl.Via, "service", st.Service(), "client", cl.Addr.String(), "connector", st.Connector(),
			"bytes_in", res.AToB, "bytes_out", res.BToA, "duration", s.now().Sub(start).Round(time.Microsecond).String()}
		var ref *wire.Refusal
		switch {
		case errors.As(res.Err, &ref):
			s.log.Warn("client refused by connector", append(args, "code", ref.Code.String(), "reason", ref.Reason)...)
		case res.Err != nil:
			s.log.Info("client connection closed", append(args, "err", res.Err)...)
		default:
			s.log.Info("client connection closed", args...)
		}
		if then != nil {
			then()
		}
	})
	s.live.started(entry, x)
	// A drain that times out cuts the whole exchange off, not just c.
	s.clients.Attach(c, x)
}

// track counts a new client connection against the caps and tracks it for
// the drain. Over a cap, it closes c at once, counts the refusal and
// reports false.
func (s *Set) track(c net.Conn, via string) bool {
	if ok, which := s.caps.take(c); !ok {
		c.Close()
		s.d.Count(admission.ReasonTooManyClients)
		if say, more := s.caps.said.Allow(nil, s.now()); say {
			limit, what := s.caps.max, "the edge's limit of client connections"
			if which == "source" {
				limit, what = s.caps.perSource, "the limit of client connections from one address"
			}
			s.log.Warn("client refused: "+what+" is reached", "via", via, "client", c.RemoteAddr().String(),
				"reason", string(admission.ReasonTooManyClients), "limit", limit, "more_refused_since_last_line", more)
		}
		return false
	}
	s.clients.Add(c)
	return true
}

// untrack stops tracking and counting c; a connection track did not
// count (a WebSocket's, carried by a tracked one) is ignored.
func (s *Set) untrack(c net.Conn) {
	s.clients.Done(c)
	s.caps.put(c)
}

// Accept accepts the next connection on l. A transient error (out of file
// descriptors) is logged and retried after a pause that doubles, up to a
// second. ok is false once l is closed or ctx has ended. The edge's tunnel
// port uses it too.
func Accept(ctx context.Context, l net.Listener, what string, log *slog.Logger) (c net.Conn, ok bool) {
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
		log.Warn("accept failed; retrying", "listener", what, "err", err, "pause", pause)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, false
		}
	}
}

// accept runs serve for each connection accepted on l until l is closed,
// tracking each for the drain. serve owns the connection; it returns true
// if it handed the connection to join, which then stops tracking it when
// the exchange ends.
func (s *Set) accept(ctx context.Context, what string, l net.Listener, serve func(net.Conn) (joined bool)) {
	for {
		c, ok := Accept(ctx, l, what, s.log)
		if !ok {
			return
		}
		if !s.track(c, what) {
			continue
		}
		s.handlers.Go(func() {
			if !serve(c) {
				s.untrack(c)
			}
		})
	}
}
