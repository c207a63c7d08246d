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
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/pipe"
	"github.com/sallyport/sallyport/internal/route"
	"github.com/sallyport/sallyport/internal/slowdown"
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
// it once, then Drain and Wait; in between, Prepare and Apply change it
// to a new config (a reload) without touching the connections of the
// listeners that stay.
type Set struct {
	d   Dispatcher
	log *slog.Logger
	now func() time.Time

	// routes is what connections are routed by now: replaced whole by
	// Apply, read without a lock. A connection keeps the routes it was
	// routed by.
	routes atomic.Pointer[routes]

	// open is the listeners that accept now, by key (see Prepare), and
	// the context their accept loops run in. Listeners that a reload
	// removed leave open at once and drain in retiring.
	open struct {
		sync.Mutex
		entries map[string]*entry
		ctx     context.Context // Serve's; nil before Serve
		drained bool            // Drain has begun: nothing new is opened
	}
	retiring sync.WaitGroup

	// handlers counts every goroutine serving a connection and every
	// exchange that join started.
	handlers sync.WaitGroup
	// owners maps each live client connection to the tracker of the
	// listener that accepted it, for the drains; caps bounds them.
	owners struct {
		sync.Mutex
		m map[net.Conn]*pipe.Tracker
	}
	caps *caps
	// live lists the exchanges under way, for the admin dashboard.
	live liveConns
	// sessionBackoff slows the refusals of session links to an address
	// that keeps presenting bad ones.
	sessionBackoff slowdown.Failures
}

// routes is what a config says about where clients go, built whole by
// Prepare and never changed after.
type routes struct {
	hosts route.Names     // http Host → service
	sni   route.Names     // TLS server name → service
	known map[string]bool // every configured service
	anyCA bool            // some service's policy asks for a client certificate
	// anyHTTPS is set if an https listener exists: HTTP session links are
	// then redeemed over https only.
	anyHTTPS bool
	svc      map[string]net.Addr // each service's own port
	shared   []net.Addr          // by index in the config's Listeners
}

// entry is one open listener: its socket, what serves it, and the client
// connections it accepted (for a drain of it alone, when a reload removes
// it).
type entry struct {
	key     string // what it is across reloads: kind and listen address
	what    string // its name in logs: "service db", "https listener (listeners[0])"
	ln      listener
	nl      net.Listener
	clients pipe.Tracker
	loop    sync.WaitGroup // its accept loop
}

// Open opens every public listener of cfg (a validated config) with
// listen, which the caller may use to close them all if Open fails.
func Open(cfg config.Edge, d Dispatcher, listen ListenFunc, log *slog.Logger) (*Set, error) {
	s := &Set{d: d, log: log, now: time.Now, caps: newCaps(cfg.Limits.MaxClients, cfg.Limits.MaxClientsPerSource)}
	s.open.entries = map[string]*entry{}
	s.owners.m = map[net.Conn]*pipe.Tracker{}
	ch, err := s.Prepare(cfg, listen)
	if err != nil {
		return nil, err
	}
	ch.Apply(0)
	return s, nil
}

// current is the routes in force.
func (s *Set) current() *routes { return s.routes.Load() }

// ServiceAddr is the address of a service's own tcp port; nil if it has
// none (it is reached only through shared listeners).
func (s *Set) ServiceAddr(service string) net.Addr { return s.current().svc[service] }

// ListenerAddr is the address of the shared listener at index i of the
// config's Listeners; nil if there is none.
func (s *Set) ListenerAddr(i int) net.Addr {
	shared := s.current().shared
	if i < 0 || i >= len(shared) {
		return nil
	}
	return shared[i]
}

// Shared is how many shared listeners there are.
func (s *Set) Shared() int { return len(s.current().shared) }

// Serve starts every listener's accept loop and returns; the loops end
// when Drain closes the listeners. Listeners a later Apply opens start
// theirs at once, in ctx.
func (s *Set) Serve(ctx context.Context) {
	s.open.Lock()
	defer s.open.Unlock()
	s.open.ctx = ctx
	for _, en := range s.open.entries {
		s.startLocked(en)
	}
}

// startLocked starts en's accept loop; s.open is locked and Serve has run.
func (s *Set) startLocked(en *entry) {
	ctx := s.open.ctx
	en.loop.Go(func() { en.ln.serve(ctx) })
}

// Drain closes every listener, lets live client connections finish for up
// to timeout, then cuts off what is left and ends the http listeners'
// requests. It returns how many connections it cut off. Exchanges cut off
// end once their tunnels close; Wait waits for them. It also waits for
// the listeners a reload removed to finish their own drain.
func (s *Set) Drain(timeout time.Duration) (left int) {
	s.open.Lock()
	s.open.drained = true
	entries := slices.Collect(maps.Values(s.open.entries))
	s.open.Unlock()
	for _, en := range entries {
		en.nl.Close()
		en.ln.drain()
	}
	var n atomic.Int64
	var waits sync.WaitGroup
	for _, en := range entries {
		en.loop.Wait()
		waits.Go(func() { n.Add(int64(en.clients.Wait(timeout))) })
	}
	waits.Wait()
	for _, en := range entries {
		en.ln.close()
	}
	s.retiring.Wait()
	return int(n.Load())
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
	if tr := s.owner(c); tr != nil {
		tr.Attach(c, x)
	}
}

// track counts a new client connection against the caps and tracks it for
// the drains in tr, its listener's. Over a cap, it closes c at once,
// counts the refusal and reports false.
func (s *Set) track(c net.Conn, via string, tr *pipe.Tracker) bool {
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
	s.owners.Lock()
	s.owners.m[c] = tr
	s.owners.Unlock()
	tr.Add(c)
	return true
}

// owner is the tracker of the listener that accepted c; nil for a
// connection track did not count (a WebSocket's, carried by a tracked
// one).
func (s *Set) owner(c net.Conn) *pipe.Tracker {
	s.owners.Lock()
	defer s.owners.Unlock()
	return s.owners.m[c]
}

// untrack stops tracking and counting c; a connection track did not
// count is ignored.
func (s *Set) untrack(c net.Conn) {
	s.owners.Lock()
	tr := s.owners.m[c]
	delete(s.owners.m, c)
	s.owners.Unlock()
	if tr != nil {
		tr.Done(c)
	}
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
// tracking each for the drains in tr. serve owns the connection; it returns true
// if it handed the connection to join, which then stops tracking it when
// the exchange ends.
func (s *Set) accept(ctx context.Context, what string, l net.Listener, tr *pipe.Tracker, serve func(net.Conn) (joined bool)) {
	for {
		c, ok := Accept(ctx, l, what, s.log)
		if !ok {
			return
		}
		if !s.track(c, what, tr) {
			continue
		}
		s.handlers.Go(func() {
			if !serve(c) {
				s.untrack(c)
			}
		})
	}
}
