package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/loglimit"
	"github.com/sallyport/sallyport/internal/pipe"
	"github.com/sallyport/sallyport/internal/route"
	"github.com/sallyport/sallyport/internal/sessionpage"
	"github.com/sallyport/sallyport/internal/tlsfiles"
	"github.com/sallyport/sallyport/internal/wire"
	"github.com/sallyport/sallyport/internal/wstunnel"
)

// httpListener is an http or https listener: requests are routed by Host
// to services and carried to their back-ends by a reverse proxy whose
// connections are tunnel streams; the edge's own hosts serve WebSocket
// access at /ws/<service>.
type httpListener struct {
	s    *Set
	kind string // http or https
	l    net.Listener
	tr   *pipe.Tracker // its client connections
	// conf is the settings from the listener's config, replaced whole by
	// a reload: a request (and a TLS handshake) uses those in force when
	// it starts.
	conf  atomic.Pointer[httpConf]
	srv   *http.Server
	proxy *httputil.ReverseProxy
	// tunnelLines limits the lines about refused tunnel WebSockets.
	tunnelLines loglimit.Limiter
	// ctx is serve's, the edge's life: tunnels taken from WebSocket
	// requests last as long (set before the server starts).
	ctx context.Context

	// state is the live connections, and whether close has begun.
	state struct {
		sync.Mutex
		conns   map[net.Conn]*httpConn
		closing bool
	}
	// requests counts the requests being served; Add is called with
	// state locked, and only while closing is false.
	requests sync.WaitGroup

	drainCtx    context.Context
	stopDrain   context.CancelFunc
	shutdownRun sync.WaitGroup
}

// httpConf is what an http or https listener's config says, read and
// checked before it is put in force; never changed after.
type httpConf struct {
	tlsConfig *tls.Config // https only: the certificates, client certificates
	edgeHosts route.Names
	wsOrigins []string
	strip     []string // request headers removed before the back-end
	forward   bool     // set X-Forwarded-*
}

// maxH2Streams bounds the concurrent requests of one HTTP/2 connection.
const maxH2Streams = 32

type ctxKey int

const (
	connKey    ctxKey = iota // *httpConn of a request
	serviceKey               // service name a request is routed to
	confKey                  // *httpConf a request is served with
)

// newHTTPConf prepares the settings of lc, an http or https listener
// whose certificates are certs (https only); anyCA says whether some
// service asks for client certificates.
func (s *Set) newHTTPConf(lc config.Listener, certs *tlsfiles.Certs, anyCA bool) (*httpConf, error) {
	conf := &httpConf{wsOrigins: lc.WSOrigins, forward: lc.ForwardHeaders(),
		strip: append(slices.Clone(config.ClientAddressHeaders), lc.StripHeaders...)}
	for _, h := range lc.EdgeHosts {
		conf.edgeHosts.Add(h, "")
	}
	if lc.Kind == config.KindHTTPS {
		tc := &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.GetCertificate,
			NextProtos:     []string{"h2", "http/1.1"},
		}
		if err := s.clientAuth(tc, lc, anyCA); err != nil {
			return nil, err
		}
		conf.tlsConfig = tc
	}
	return conf, nil
}

// newHTTPListener prepares an http or https listener with conf; bind
// gives it its socket.
func newHTTPListener(s *Set, kind string, conf *httpConf, tr *pipe.Tracker) *httpListener {
	f := &httpListener{s: s, kind: kind, tr: tr}
	f.conf.Store(conf)
	f.state.conns = make(map[net.Conn]*httpConn)
	errLog := slog.NewLogLogger(s.log.With("via", kind).Handler(), slog.LevelDebug)
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			conf, _ := pr.In.Context().Value(confKey).(*httpConf)
			service, _ := pr.In.Context().Value(serviceKey).(string)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = service // the per-connection transport dials by service
			pr.Out.Host = pr.In.Host
			for _, h := range conf.strip {
				pr.Out.Header.Del(h)
			}
			stripSessionCookies(pr.Out.Header)
			if conf.forward {
				pr.SetXForwarded()
			}
		},
		Transport:     roundTripper(f.roundTrip),
		FlushInterval: -1,
		ErrorLog:      errLog,
		ErrorHandler:  f.proxyError,
	}
	f.srv = &http.Server{
		Handler:           f,
		ReadHeaderTimeout: handshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
		ConnContext:       f.connContext,
		ConnState:         f.connState,
		// Each stream of an HTTP/2 connection is a request that may hold
		// a tunnel stream's window: a few tens bound one client's share.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: maxH2Streams},
	}
	f.drainCtx, f.stopDrain = context.WithCancel(context.Background())
	return f
}

// clientAuth sets up client certificates: required and checked at the
// handshake with the listener's client_ca, or asked for (and checked per
// request) when a service has a client_ca (anyCA).
func (s *Set) clientAuth(tc *tls.Config, lc config.Listener, anyCA bool) error {
	if lc.ClientCA != "" {
		ca, err := tlsfiles.LoadCAFile(lc.ClientCA, s.log, s.now)
		if err != nil {
			return err
		}
		tc.ClientAuth = tls.RequestClientCert
		// The names offered to clients as a hint; verification below
		// uses the file as it is now.
		tc.ClientCAs = ca.Pool()
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := ca.Verify(cs.PeerCertificates, s.now()); err != nil {
				s.d.Refused(admission.Refuse(admission.ReasonClientCert, "",
					"the https listener needs a client certificate from its CA (server name %q): %v", cs.ServerName, err),
					admission.Client{Via: lc.Kind})
				return fmt.Errorf("client certificate refused: %w", err)
			}
			return nil
		}
		return nil
	}
	if anyCA {
		tc.ClientAuth = tls.RequestClientCert
	}
	return nil
}

func (f *httpListener) serve(ctx context.Context) {
	f.ctx = ctx
	var l net.Listener = &sniffListener{Listener: f.l, s: f.s, tr: f.tr, via: f.kind, sniff: sniffHTTP, reason: admission.ReasonNotHTTP, what: "an HTTP request"}
	if f.kind == config.KindHTTPS {
		l = &sniffListener{Listener: f.l, s: f.s, tr: f.tr, via: f.kind, sniff: sniffTLS, reason: admission.ReasonNotTLS, what: "a TLS handshake"}
		// Each handshake takes the certificates in force when it starts.
		l = tls.NewListener(l, &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.conf.Load().tlsConfig, nil
		}})
	}
	err := f.srv.Serve(l)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		f.s.log.Error("listener stopped", "via", f.kind, "err", err)
	}
}

// drain starts a graceful shutdown: idle connections close, live requests
// may finish until close.
func (f *httpListener) drain() {
	f.shutdownRun.Go(func() { f.srv.Shutdown(f.drainCtx) })
}

// close ends every connection and waits for the requests still running.
func (f *httpListener) close() {
	f.stopDrain()
	f.srv.Close()
	f.shutdownRun.Wait()
	f.state.Lock()
	f.state.closing = true
	f.state.Unlock()
	f.requests.Wait()
	f.state.Lock()
	defer f.state.Unlock()
	for c, hc := range f.state.conns {
		hc.close()
		delete(f.state.conns, c)
	}
}

// httpConn is one client connection of an http(s) listener, with the
// transport whose pooled streams carry its requests, so that a back-end
// connection serves one client only (its PROXY header and the connector's
// logs name that client).
type httpConn struct {
	addr net.Addr
	conn net.Conn // as accepted: a *tls.Conn on a *sniffConn, for https

	// pool is the transport, made on first use, and whether the
	// connection has closed.
	pool struct {
		sync.Mutex
		tr     *http.Transport
		closed bool
	}
}

func (f *httpListener) connContext(ctx context.Context, c net.Conn) context.Context {
	hc := &httpConn{addr: c.RemoteAddr(), conn: c}
	f.state.Lock()
	f.state.conns[c] = hc
	f.state.Unlock()
	return context.WithValue(ctx, connKey, hc)
}

func (f *httpListener) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	f.state.Lock()
	hc := f.state.conns[c]
	delete(f.state.conns, c)
	f.state.Unlock()
	if hc != nil {
		hc.close()
	}
}

// close drops the connection's idle streams; streams still in use close
// when their request ends.
func (hc *httpConn) close() {
	hc.pool.Lock()
	defer hc.pool.Unlock()
	hc.pool.closed = true
	if hc.pool.tr != nil {
		hc.pool.tr.CloseIdleConnections()
	}
}

// transport returns the connection's transport, made on first use.
func (hc *httpConn) transport(f *httpListener) *http.Transport {
	hc.pool.Lock()
	defer hc.pool.Unlock()
	if hc.pool.tr == nil {
		c := admission.Client{Addr: hc.addr, Via: f.kind}
		hc.pool.tr = &http.Transport{
			DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
				service, _, _ := net.SplitHostPort(addr)
				st, ref := f.s.d.Open(service, c)
				if ref != nil {
					return nil, ref
				}
				// Dialed once the connector has answered, within its
				// bounded wait: a silent connector fails the dial.
				if err := st.Accepted(); err != nil {
					st.Close()
					return nil, err
				}
				return st, nil
			},
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       30 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
		}
		if hc.pool.closed {
			hc.pool.tr.CloseIdleConnections() // a late request on a closed connection pools nothing
		}
	}
	return hc.pool.tr
}

type roundTripper func(*http.Request) (*http.Response, error)

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return rt(r) }

func (f *httpListener) roundTrip(r *http.Request) (*http.Response, error) {
	hc, _ := r.Context().Value(connKey).(*httpConn)
	if hc == nil {
		return nil, errors.New("request without its client connection")
	}
	return hc.transport(f).RoundTrip(r)
}

// ServeHTTP routes a request by its Host: to the edge's own WebSocket
// access, to a service's back-end, or to a 404. On a service's host,
// SessionLinkPath is the edge's (serveLink), and a valid session cookie
// admits the request as the session's (require_session).
func (f *httpListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.state.Lock()
	if f.state.closing {
		f.state.Unlock()
		writeText(w, http.StatusServiceUnavailable, "the edge is shutting down; try again")
		return
	}
	f.requests.Add(1)
	f.state.Unlock()
	defer f.requests.Done()

	hc, _ := r.Context().Value(connKey).(*httpConn)
	c := admission.Client{Addr: hc.addr, Via: f.kind}
	if r.TLS != nil {
		c.Certs = r.TLS.PeerCertificates
	}
	conf := f.conf.Load()
	// The tunnel's path is the edge's on every host name, ahead of any
	// service's routing: no service can take it, or be reached by it.
	if r.URL.Path == wstunnel.Path && conf.tlsConfig != nil {
		f.serveTunnel(w, r, hc)
		return
	}
	host := route.HostOnly(r.Host)
	if _, ok := conf.edgeHosts.Lookup(host); ok {
		f.serveEdgeHost(w, r, c, conf)
		return
	}
	service, ok := f.s.current().hosts.Lookup(host)
	if !ok {
		writeRefusal(w, f.s.d.Refused(admission.Refuse(admission.ReasonUnknownHost, "", "no service is published at host %q", host), c))
		return
	}
	if token, ok := strings.CutPrefix(r.URL.Path, SessionLinkPath); ok {
		f.serveLink(w, r, token, host, c)
		return
	}
	c.Session = f.sessionCookie(r, host)
	release, ref := f.s.d.Admit(service, c)
	if ref != nil {
		if ref.Reason == admission.ReasonSessionRequired {
			writeSessionRequired(w, ref)
			return
		}
		writeRefusal(w, ref)
		return
	}
	defer release()
	ctx := context.WithValue(context.WithValue(r.Context(), serviceKey, service), confKey, conf)
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// serveTunnel takes a connector's tunnel in a WebSocket (package
// wstunnel) and hands it to the edge. A request that is not a WebSocket
// upgrade gets a bare 400. The connection stops counting as a client's
// (caps, drain): from here the edge bounds it as a tunnel in its opening.
func (f *httpListener) serveTunnel(w http.ResponseWriter, r *http.Request, hc *httpConn) {
	if r.ProtoMajor != 1 {
		// A WebSocket is an HTTP/1.1 upgrade; the connector asks for no h2.
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	c, err := wstunnel.Accept(w, r)
	if err != nil {
		if say, more := f.tunnelLines.Allow(nil, f.s.now()); say {
			f.s.log.Warn("tunnel WebSocket refused", "via", f.kind, "client", hc.addr.String(), "err", err, "more_unlogged", more)
		}
		return
	}
	if tc, ok := hc.conn.(*tls.Conn); ok {
		if sc, ok := tc.NetConn().(*sniffConn); ok {
			sc.detach()
		}
	}
	f.s.d.Tunnel(f.ctx, c)
}

// serveEdgeHost serves the edge's own host names: /ws/<service>, the
// one-time session links at /s/<token> (or /s/ with the token in a
// subprotocol), and the browser page for those links (package
// sessionpage), which uses no link up.
func (f *httpListener) serveEdgeHost(w http.ResponseWriter, r *http.Request, c admission.Client, conf *httpConf) {
	if r.URL.Path == sessionpage.Path {
		sessionpage.Serve(w, r)
		return
	}
	if token, ok := strings.CutPrefix(r.URL.Path, "/s/"); ok {
		f.s.serveSession(w, r, token, c, conf.wsOrigins)
		return
	}
	service, ok := strings.CutPrefix(r.URL.Path, "/ws/")
	if !ok || service == "" || strings.Contains(service, "/") {
		writeText(w, http.StatusNotFound, "nothing here: WebSocket access to a service is at /ws/<service>, and by a one-time link at /s/<token>")
		return
	}
	f.s.serveWS(w, r, service, c, conf.wsOrigins)
}

// proxyError answers a request the back-end could not serve.
func (f *httpListener) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	service, _ := r.Context().Value(serviceKey).(string)
	hc, _ := r.Context().Value(connKey).(*httpConn)
	args := []any{"via", f.kind, "service", service, "client", hc.addr.String(), "method", r.Method, "host", r.Host}
	var ref *admission.Refusal
	var wr *wire.Refusal
	switch {
	case errors.As(err, &ref): // counted and logged when the stream was refused
		writeRefusal(w, ref)
	case errors.As(err, &wr):
		f.s.log.Warn("client refused by connector", append(args, "code", wr.Code.String(), "reason", wr.Reason)...)
		writeText(w, answerFor(wr).http, connectorSays(service, wr))
	case errors.Is(err, context.Canceled):
		f.s.log.Info("http request abandoned by the client", args...)
	default:
		f.s.log.Warn("http request failed", append(args, "err", err)...)
		writeText(w, http.StatusBadGateway, fmt.Sprintf("service %s: no answer from its back-end", service))
	}
}

// writeRefusal answers a refused request with the status that fits.
func writeRefusal(w http.ResponseWriter, ref *admission.Refusal) {
	a := answerFor(ref)
	if a.retry {
		w.Header().Set("Retry-After", "1")
	}
	writeText(w, a.http, ref.Msg)
}

// writeText writes a short plain-text answer from the edge itself.
func writeText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "sallyport: %s\n", msg)
}
