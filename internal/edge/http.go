package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/wire"
)

// httpFront is an http or https listener: requests are routed by Host to
// services and carried to their back-ends by a reverse proxy whose
// connections are tunnel streams; the edge's own hosts serve WebSocket
// access at /ws/<service>.
type httpFront struct {
	e         *Edge
	kind      string // http or https
	l         net.Listener
	tlsConfig *tls.Config // https only
	srv       *http.Server
	proxy     *httputil.ReverseProxy
	edgeHosts names
	wsOrigins []string

	// mu guards conns, closing and requests' Add.
	mu       sync.Mutex
	conns    map[net.Conn]*httpConn
	closing  bool
	requests sync.WaitGroup

	drainCtx    context.Context
	stopDrain   context.CancelFunc
	shutdownRun sync.WaitGroup
}

type ctxKey int

const (
	connKey    ctxKey = iota // *httpConn of a request
	serviceKey               // service name a request is routed to
)

// newHTTPFront prepares an http or https listener on l.
func newHTTPFront(e *Edge, lc config.Listener, l net.Listener, certs *certStore) (*httpFront, error) {
	f := &httpFront{e: e, kind: lc.Kind, l: l, conns: make(map[net.Conn]*httpConn), wsOrigins: lc.WSOrigins}
	for _, h := range lc.EdgeHosts {
		f.edgeHosts.add(h, "")
	}
	errLog := slog.NewLogLogger(e.log.With("via", lc.Kind).Handler(), slog.LevelDebug)
	forward := lc.ForwardHeaders()
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			service, _ := pr.In.Context().Value(serviceKey).(string)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = service // the per-connection transport dials by service
			pr.Out.Host = pr.In.Host
			if forward {
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
	}
	if lc.Kind == config.KindHTTPS {
		tc := &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.get,
			NextProtos:     []string{"h2", "http/1.1"},
		}
		if err := f.clientAuth(tc, lc); err != nil {
			return nil, err
		}
		f.tlsConfig = tc
	}
	f.drainCtx, f.stopDrain = context.WithCancel(context.Background())
	return f, nil
}

// clientAuth sets up client certificates: required and checked at the
// handshake with the listener's client_ca, or asked for (and checked per
// request) when a service has a client_ca.
func (f *httpFront) clientAuth(tc *tls.Config, lc config.Listener) error {
	if lc.ClientCA != "" {
		ca, err := loadCAFile(lc.ClientCA, f.e.log, f.e.now)
		if err != nil {
			return fmt.Errorf("client_ca: %w", err)
		}
		p := &policy{clientCAs: ca}
		tc.ClientAuth = tls.RequestClientCert
		// The names offered to clients as a hint; verification below
		// uses the file as it is now.
		tc.ClientCAs = ca.current()
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := p.verifyClient(cs.PeerCertificates, f.e.now()); err != nil {
				f.e.refusals.add(ReasonClientCert)
				f.e.log.Warn("client refused: the https listener needs a client certificate from its CA", "via", f.kind,
					"reason", string(ReasonClientCert), "sni", cs.ServerName, "err", err)
				return fmt.Errorf("client certificate refused: %w", err)
			}
			return nil
		}
		return nil
	}
	for _, p := range f.e.fronts.policies {
		if p.clientCAs != nil {
			tc.ClientAuth = tls.RequestClientCert
			return nil
		}
	}
	return nil
}

func (f *httpFront) serve(ctx context.Context) {
	var l net.Listener = &sniffListener{Listener: f.l, e: f.e, via: f.kind, sniff: sniffHTTP, reason: ReasonNotHTTP, what: "an HTTP request"}
	if f.tlsConfig != nil {
		l = &sniffListener{Listener: f.l, e: f.e, via: f.kind, sniff: sniffTLS, reason: ReasonNotTLS, what: "a TLS handshake"}
		l = tls.NewListener(l, f.tlsConfig)
	}
	err := f.srv.Serve(l)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		f.e.log.Error("listener stopped", "via", f.kind, "err", err)
	}
}

// drain starts a graceful shutdown: idle connections close, live requests
// may finish until close.
func (f *httpFront) drain() {
	f.shutdownRun.Go(func() { f.srv.Shutdown(f.drainCtx) })
}

// close ends every connection and waits for the requests still running.
func (f *httpFront) close() {
	f.stopDrain()
	f.srv.Close()
	f.shutdownRun.Wait()
	f.mu.Lock()
	f.closing = true
	f.mu.Unlock()
	f.requests.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for c, hc := range f.conns {
		hc.close()
		delete(f.conns, c)
	}
}

// httpConn is one client connection of an http(s) listener, with the
// transport whose pooled streams carry its requests, so that a back-end
// connection serves one client only (its PROXY header and the connector's
// logs name that client).
type httpConn struct {
	addr net.Addr

	// mu guards tr and closed.
	mu     sync.Mutex
	tr     *http.Transport
	closed bool
}

func (f *httpFront) connContext(ctx context.Context, c net.Conn) context.Context {
	hc := &httpConn{addr: c.RemoteAddr()}
	f.mu.Lock()
	f.conns[c] = hc
	f.mu.Unlock()
	return context.WithValue(ctx, connKey, hc)
}

func (f *httpFront) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	f.mu.Lock()
	hc := f.conns[c]
	delete(f.conns, c)
	f.mu.Unlock()
	if hc != nil {
		hc.close()
	}
}

// close drops the connection's idle streams; streams still in use close
// when their request ends.
func (hc *httpConn) close() {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.closed = true
	if hc.tr != nil {
		hc.tr.CloseIdleConnections()
	}
}

// transport returns the connection's transport, made on first use.
func (hc *httpConn) transport(f *httpFront) *http.Transport {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.tr == nil {
		c := client{addr: hc.addr, via: f.kind}
		hc.tr = &http.Transport{
			DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
				service, _, _ := net.SplitHostPort(addr)
				st, ref := f.e.openStream(service, c)
				if ref != nil {
					return nil, ref
				}
				return st, nil
			},
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       30 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
		}
		if hc.closed {
			hc.tr.CloseIdleConnections() // a late request on a closed connection pools nothing
		}
	}
	return hc.tr
}

type roundTripper func(*http.Request) (*http.Response, error)

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return rt(r) }

func (f *httpFront) roundTrip(r *http.Request) (*http.Response, error) {
	hc, _ := r.Context().Value(connKey).(*httpConn)
	if hc == nil {
		return nil, errors.New("request without its client connection")
	}
	return hc.transport(f).RoundTrip(r)
}

// ServeHTTP routes a request by its Host: to the edge's own WebSocket
// access, to a service's back-end, or to a 404.
func (f *httpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if f.closing {
		f.mu.Unlock()
		writeText(w, http.StatusServiceUnavailable, "the edge is shutting down; try again")
		return
	}
	f.requests.Add(1)
	f.mu.Unlock()
	defer f.requests.Done()

	hc, _ := r.Context().Value(connKey).(*httpConn)
	c := client{addr: hc.addr, via: f.kind}
	if r.TLS != nil {
		c.certs = r.TLS.PeerCertificates
	}
	host := hostOnly(r.Host)
	if _, ok := f.edgeHosts.lookup(host); ok {
		f.serveEdgeHost(w, r, c)
		return
	}
	service, ok := f.e.fronts.hosts.lookup(host)
	if !ok {
		ref := f.e.refused(refuse(ReasonUnknownHost, "", "no service is published at host %q", host), c)
		writeText(w, http.StatusNotFound, ref.msg)
		return
	}
	release, ref := f.e.admit(service, c)
	if ref != nil {
		writeRefusal(w, ref)
		return
	}
	defer release()
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), serviceKey, service)))
}

// serveEdgeHost serves the edge's own host names: /ws/<service> only.
func (f *httpFront) serveEdgeHost(w http.ResponseWriter, r *http.Request, c client) {
	service, ok := strings.CutPrefix(r.URL.Path, "/ws/")
	if !ok || service == "" || strings.Contains(service, "/") {
		writeText(w, http.StatusNotFound, "nothing here: WebSocket access to a service is at /ws/<service>")
		return
	}
	f.e.serveWS(w, r, service, c, f.wsOrigins)
}

// proxyError answers a request the back-end could not serve.
func (f *httpFront) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	service, _ := r.Context().Value(serviceKey).(string)
	hc, _ := r.Context().Value(connKey).(*httpConn)
	args := []any{"via", f.kind, "service", service, "client", hc.addr.String(), "method", r.Method, "host", r.Host}
	var ref *refusedError
	var wr *wire.Refusal
	switch {
	case errors.As(err, &ref): // counted and logged when the stream was refused
		writeRefusal(w, ref)
	case errors.As(err, &wr):
		f.e.log.Warn("client refused by connector", append(args, "code", wr.Code.String(), "reason", wr.Reason)...)
		status := http.StatusBadGateway
		if wr.Code == wire.CodeDraining {
			status = http.StatusServiceUnavailable
		}
		writeText(w, status, fmt.Sprintf("service %s: %s", service, wr.Reason))
	case errors.Is(err, context.Canceled):
		f.e.log.Info("http request abandoned by the client", args...)
	default:
		f.e.log.Warn("http request failed", append(args, "err", err)...)
		writeText(w, http.StatusBadGateway, fmt.Sprintf("service %s: no answer from its back-end", service))
	}
}

// writeRefusal answers a refused request with the status that fits.
func writeRefusal(w http.ResponseWriter, ref *refusedError) {
	status := http.StatusBadGateway
	switch ref.reason {
	case ReasonUnknownHost, ReasonUnknownService:
		status = http.StatusNotFound
	case ReasonDenied, ReasonClientCert:
		status = http.StatusForbidden
	case ReasonRate:
		status = http.StatusTooManyRequests
		w.Header().Set("Retry-After", "1")
	case ReasonMaxConnections, ReasonNoConnector:
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "1")
	}
	writeText(w, status, ref.msg)
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

// hostOnly strips the port from a Host header value.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}
