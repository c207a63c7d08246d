package edge

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/ingress"
	"github.com/sallyport/sallyport/internal/metrics"
	"github.com/sallyport/sallyport/internal/route"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// The edge is the listeners' Dispatcher: it admits clients by the
// services' policies and opens streams through the tunnels that offer
// them.
var _ ingress.Dispatcher = (*Edge)(nil)

// OpenAddress opens a stream to a destination address that a client named
// instead of a service (SOCKS). The edge never knows back-end addresses:
// it looks the address up with the connectors (lookupAddress), which
// dials nothing, and the service a connector's allow-list serves it as
// then applies its policy. Only an admitted client gets a stream: to that
// service, on the tunnel that answered (another connector may serve the
// same name from another back-end). The stream holds the policy slot. It
// returns the refusal with ReasonAddressNotAllowed if no connector allows
// the address.
func (e *Edge) OpenAddress(address string, c admission.Client) (ingress.Stream, *admission.Refusal) {
	sess, service := e.lookupAddress(address, c)
	if sess == nil {
		return nil, e.Refused(admission.Refuse(admission.ReasonAddressNotAllowed, "", "no connector allows address %s", address), c)
	}
	release, ref := e.Admit(service, c)
	if ref != nil {
		return nil, ref
	}
	st, ref := e.openOn(sess, service, c)
	if ref != nil {
		release()
		return nil, ref
	}
	st.Hold(release)
	return st, nil
}

// lookupAddress asks every connector that is granted a service it
// offers, at once, which service its allow-list serves address as (one
// tunnel per connector is enough to learn its answer), and returns the
// tunnel of the first answer that names a service, with that service. An
// answer naming a service the connector is not granted is not used. It
// returns a nil tunnel if no connector names one.
func (e *Edge) lookupAddress(address string, c admission.Client) (*tunnel.Session, string) {
	e.conns.Lock()
	var sessions []*tunnel.Session
	for _, tunnels := range e.conns.byID {
		for sess, info := range tunnels {
			if e.routedLocked(info, "") {
				sessions = append(sessions, sess)
				break
			}
		}
	}
	e.conns.Unlock()
	// Each answer comes within answer_timeout, so a silent connector
	// delays nobody; the client waits for the first usable one only, and
	// the others end as they come (e.handlers waits for them).
	type answer struct {
		sess    *tunnel.Session
		service string
	}
	answers := make(chan answer, len(sessions))
	for _, sess := range sessions {
		e.handlers.Go(func() { answers <- answer{sess, e.askAddress(sess, address, c)} })
	}
	for range sessions {
		a := <-answers
		if a.service == "" {
			continue
		}
		e.conns.Lock()
		info := e.conns.tunnels[a.sess]
		granted := info != nil && e.routedLocked(info, a.service)
		e.conns.Unlock()
		if granted {
			return a.sess, a.service
		}
		if info != nil {
			e.log.Warn("connector named a service it is not granted for an address: not used", "connector", info.connectorID,
				"address", address, "service", a.service)
		}
	}
	return nil, ""
}

// askAddress asks the connector at the other end of sess which service
// its allow-list serves address as (step 7 of the wire protocol),
// waiting at most answer_timeout. It returns "" for a refusal, a silence
// or a lost tunnel. It closes the lookup's stream before it returns.
func (e *Edge) askAddress(sess *tunnel.Session, address string, c admission.Client) string {
	st, err := sess.Open(wire.StreamOpen{Client: c.Addr.String(), Address: address})
	if err != nil {
		return ""
	}
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(e.cfg.Tunnel.AnswerTimeout))
	err = st.Accepted()
	if ref := (*wire.Refusal)(nil); errors.As(err, &ref) && ref.Code == wire.CodeDraining {
		e.drained(sess, e.connectorOf(sess))
	}
	if err != nil {
		return ""
	}
	return st.Answer().Service
}

// Admit applies service's policy to c; see admission.Policy.Admit. An
// unknown service is refused.
func (e *Edge) Admit(service string, c admission.Client) (func(), *admission.Refusal) {
	if ref := e.fencedClient(service, c); ref != nil {
		return nil, ref
	}
	p, ok := e.current().policies[service]
	if !ok {
		return nil, e.Refused(admission.Refuse(admission.ReasonUnknownService, service, "no service named %q", service), c)
	}
	release, ref := p.Admit(c, e.now())
	if ref != nil {
		return nil, e.Refused(ref, c)
	}
	e.metrics.Admitted(service, c.Via)
	return release, nil
}

// Open opens a stream to service through a tunnel that offers it, without
// applying a policy (the caller has). The stream's first Read returns the
// connector's refusal, if any, as a *wire.Refusal.
func (e *Edge) Open(service string, c admission.Client) (ingress.Stream, *admission.Refusal) {
	sess, ok := e.pick(service)
	if !ok {
		return nil, e.Refused(admission.Refuse(admission.ReasonNoConnector, service, "no connector offers service %s right now; try again later", service), c)
	}
	st, ref := e.openOn(sess, service, c)
	if ref != nil {
		return nil, ref
	}
	return st, nil
}

// pick chooses the tunnel for a new stream to service: among the
// connectors that offer it (replicas), the one with the fewest streams
// on its tunnels here, and its least loaded tunnel, heard from lately
// and not failing (see route.Table.Pick, register's Group, load and
// failing.go).
func (e *Edge) pick(service string) (*tunnel.Session, bool) {
	now := e.now()
	return e.routes.Pick(service, func(sess *tunnel.Session) route.Load {
		l := e.load(sess)
		l.Failing = e.failing.is(sess, service, now)
		return l
	})
}

// load is how busy and how alive a tunnel looks from this edge's data
// path: the streams open on it now, and whether it has ended (its routes
// go a moment later) or the connector has been silent for more than two
// keepalive intervals (this edge's pings go unanswered, so the tunnel may
// be dead and not yet timed out). It takes
// only the tunnel's own lock, so it may run under the route table's.
func (e *Edge) load(sess *tunnel.Session) route.Load {
	return route.Load{
		Streams: sess.NumStreams(),
		Stale:   sess.IsClosed() || e.now().Sub(sess.LastRead()) > 2*e.cfg.Tunnel.KeepaliveInterval,
	}
}

// openOn opens a stream to service on the tunnel sess, for c; see Open.
func (e *Edge) openOn(sess *tunnel.Session, service string, c admission.Client) (*streamConn, *admission.Refusal) {
	if ref := e.fencedClient(service, c); ref != nil {
		return nil, ref
	}
	connector := e.connectorOf(sess)
	st, err := sess.Open(wire.StreamOpen{Service: service, Client: c.Addr.String()})
	if err != nil {
		ref := admission.Refuse(admission.ReasonTunnel, service, "service %s: the tunnel to its connector failed; try again", service)
		e.log.Warn("client refused: tunnel failed", "via", c.Via, "service", service, "client", c.Addr.String(), "connector", connector, "err", err)
		e.note(ref, c)
		return nil, ref
	}
	m := e.metrics.Service(service)
	m.Opened.Inc()
	return &streamConn{Stream: st, e: e, sess: sess, service: service, connector: connector, client: c, m: m, opened: e.now()}, nil
}

// connectorOf names the connector at the other end of sess; "" once the
// tunnel is gone.
func (e *Edge) connectorOf(sess *tunnel.Session) string {
	e.conns.Lock()
	defer e.conns.Unlock()
	if info := e.conns.tunnels[sess]; info != nil {
		return info.connectorID
	}
	return ""
}

// drained stops routing clients to sess, whose connector has said it is
// draining, and logs it the first time.
func (e *Edge) drained(sess *tunnel.Session, connector string) {
	if e.stopRouting(sess) {
		// The connector is shutting down: send later clients elsewhere.
		e.log.Info("connector draining: no more clients routed to this tunnel", "connector", connector)
	}
}

// refusalLinesPerSecond is how many refusals of one reason are logged in
// one second; the rest are counted (status shows every one) and the next
// line for that reason says how many went unlogged.
const refusalLinesPerSecond = 10

// Count counts a refusal that a listener logs itself.
func (e *Edge) Count(r admission.Reason) {
	e.note(&admission.Refusal{Reason: r, Msg: "see the edge's log"}, admission.Client{})
}

// note counts a refusal, in the status and in the metrics, and keeps it
// among the recent ones, which the dashboard lists; c is the client, as
// far as it is known (the refusal's service and the listener kind may be
// unknown: "").
func (e *Edge) note(ref *admission.Refusal, c admission.Client) {
	e.refusals.Add(ref.Reason)
	e.metrics.Refused(ref.Service, c.Via, string(ref.Reason))
	rec := admission.Recorded{Time: e.now(), Reason: ref.Reason, Service: ref.Service, Via: c.Via, Msg: ref.Msg}
	if c.Addr != nil {
		rec.Client = c.Addr.String()
	}
	e.recent.Add(rec)
}

// Refused counts and logs a refusal and returns it.
func (e *Edge) Refused(ref *admission.Refusal, c admission.Client) *admission.Refusal {
	e.note(ref, c)
	msg := "client refused: " + ref.Msg
	if ref.Reason == admission.ReasonNoConnector {
		msg = "client refused: no connector offers the service"
	}
	args := []any{"via", c.Via}
	if c.Addr != nil { // nil for a refusal during a TLS handshake
		args = append(args, "client", c.Addr.String())
	}
	args = append(args, "reason", string(ref.Reason))
	if ref.Service != "" {
		args = append(args, "service", ref.Service)
	}
	say, unsaid := e.refusalLines.Allow(ref.Reason, e.now())
	if !say {
		return ref
	}
	if unsaid > 0 {
		args = append(args, "more_refused_unlogged", unsaid)
	}
	e.log.Warn(msg, args...)
	return ref
}

// streamConn is a stream opened for one client: an ingress.Stream.
// Closing it gives back the client's policy slot.
type streamConn struct {
	*tunnel.Stream
	e         *Edge
	sess      *tunnel.Session
	service   string
	connector string
	// client is who the stream is for (the refusal metrics and the
	// dashboard's list of refusals name its listener kind and address).
	client admission.Client
	// m are the service's metrics; opened is when the stream was opened.
	// The relay adds each read's and write's bytes to m's counters, one
	// atomic add each.
	m      *metrics.ServiceMetrics
	opened time.Time
	// firstByte is set by the first read that returns bytes; closed by
	// the first Close.
	firstByte, closed atomic.Bool
	// release gives back the policy slot; nil if none is held.
	release func()
	// onRefusal, if set, is called once with the connector's refusal
	// before the Read that returns it: a listener tells its client there.
	onRefusal atomic.Pointer[func(*wire.Refusal)]

	refusalOnce sync.Once
}

// Service names the service the stream reaches.
func (s *streamConn) Service() string { return s.service }

// Connector names the connector at the stream's other end.
func (s *streamConn) Connector() string { return s.connector }

// OnRefusal sets what to call with the connector's refusal; see
// ingress.Stream.
func (s *streamConn) OnRefusal(f func(*wire.Refusal)) { s.onRefusal.Store(&f) }

// tell tells the listener of ref, once, if it asked to be told.
func (s *streamConn) tell(ref *wire.Refusal) {
	if f := s.onRefusal.Load(); f != nil && *f != nil {
		(*f)(ref)
	}
}

// end ends the stream for the edge's reason ref (a session revoked):
// the listener tells its client why, unless a refusal was told already,
// and the exchange ends with the stream.
func (s *streamConn) end(ref *wire.Refusal) {
	s.refusalOnce.Do(func() { s.tell(ref) })
	s.Stream.Close()
}

// Hold makes Close give back a policy slot.
func (s *streamConn) Hold(release func()) { s.release = release }

// Read reads the back-end's bytes; the first Read returns the connector's
// refusal, if any, as a *wire.Refusal.
func (s *streamConn) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	s.received(n)
	return n, s.checkRefusal(err)
}

// received counts n bytes read from the back-end, and observes the time
// to the first of them.
func (s *streamConn) received(n int) {
	if n <= 0 {
		return
	}
	s.m.ToClient.Add(float64(n))
	if !s.firstByte.Load() && s.firstByte.CompareAndSwap(false, true) {
		s.m.FirstByte.Observe(s.e.now().Sub(s.opened).Seconds())
	}
}

// TryRead is Read without waiting; see tunnel.Stream.TryRead.
func (s *streamConn) TryRead(b []byte) (int, bool, error) {
	n, wait, err := s.Stream.TryRead(b)
	s.received(n)
	return n, wait, s.checkRefusal(err)
}

// Accepted waits for the connector's answer, for at most the tunnel's
// answer_timeout (a connector silent for longer is reported to the client
// as unavailable);
// see tunnel.Stream.Accepted. A connector that stays silent is an
// *admission.Refusal (ReasonConnectorTimeout), counted and logged.
func (s *streamConn) Accepted() error {
	wait := s.e.cfg.Tunnel.AnswerTimeout
	s.Stream.SetReadDeadline(time.Now().Add(wait))
	err := s.Stream.Accepted()
	s.Stream.SetReadDeadline(time.Time{})
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.e.log.Warn("client refused: the connector did not answer", "service", s.service, "connector", s.connector, "waited", wait.String())
		ref := admission.Refuse(admission.ReasonConnectorTimeout, s.service,
			"service %s: its connector did not answer within %s; try again later", s.service, wait)
		s.e.note(ref, s.client)
		return ref
	}
	return s.checkRefusal(err)
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
	if n > 0 {
		s.m.ToBackend.Add(float64(n))
	}
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
// draining connector, and tells the listener.
func (s *streamConn) connectorRefused(ref *wire.Refusal) {
	e := s.e
	e.note(admission.Refuse(admission.ReasonConnector, s.service, "refused by connector: %s", ref.Reason), s.client)
	switch ref.Code {
	case wire.CodeDraining:
		e.drained(s.sess, s.connector)
	case wire.CodeBackendUnreachable:
		e.failing.mark(s.sess, s.service, e.now())
	}
	s.tell(ref)
}

// Close closes the stream and gives back the policy slot; the first
// Close observes how long the stream lasted.
func (s *streamConn) Close() error {
	if !s.closed.Swap(true) {
		s.m.Duration.Observe(s.e.now().Sub(s.opened).Seconds())
	}
	err := s.Stream.Close()
	if s.release != nil {
		s.release()
	}
	return err
}
