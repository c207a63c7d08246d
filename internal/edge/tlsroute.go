package edge

import (
	"context"
	"errors"
	"net"
	"time"
)

// tlsFront is a tls listener: it reads each client's ClientHello without
// decrypting anything, routes the connection by its server name (SNI),
// and passes every byte through to the service's back-end, which
// terminates TLS itself.
type tlsFront struct {
	e *Edge
	l net.Listener
}

func (f *tlsFront) serve(ctx context.Context) { f.e.accept(ctx, "tls", f.l, f.handle) }
func (f *tlsFront) drain()                    {}
func (f *tlsFront) close()                    {}

// handle serves one client. It owns c and closes it.
func (f *tlsFront) handle(c net.Conn) (joined bool) {
	e := f.e
	start := e.now()
	cl := client{addr: c.RemoteAddr(), via: "tls"}
	c.SetDeadline(start.Add(handshakeTimeout))
	hello, name, err := readClientHello(c)
	var ref *refusedError
	alert := byte(0)
	switch {
	case errors.Is(err, errNotTLS):
		ref = refuse(ReasonNotTLS, "", "not a TLS ClientHello: %v", err)
	case errors.Is(err, errBadHello):
		ref, alert = refuse(ReasonNotTLS, "", "%v", err), alertHandshakeFailure
	case err != nil:
		e.log.Debug("TLS client went away before its ClientHello", "client", cl.addr.String(), "err", err)
		c.Close()
		return false
	case name == "":
		ref, alert = refuse(ReasonNoSNI, "", "TLS ClientHello without a server name (SNI); this listener routes by it"), alertUnrecognizedName
	}
	var service string
	if ref == nil {
		var ok bool
		if service, ok = e.fronts.sni.lookup(name); !ok {
			ref, alert = refuse(ReasonUnroutedSNI, "", "no service is published at TLS server name %q", name), alertUnrecognizedName
		}
	}
	if ref != nil {
		e.refused(ref, cl)
		if alert != 0 {
			c.Write(tlsAlert(alert))
		}
		c.Close()
		return false
	}
	st, ref := e.reach(service, cl)
	if ref != nil {
		alert := byte(alertInternalError)
		switch ref.reason {
		case ReasonDenied, ReasonMaxConnections, ReasonRate:
			alert = alertAccessDenied
		}
		c.Write(tlsAlert(alert))
		c.Close()
		return false
	}
	c.SetDeadline(time.Time{})
	if _, err := st.Write(hello); err != nil {
		e.log.Warn("client connection closed: the tunnel failed", "via", cl.via, "service", service, "client", cl.addr.String(), "err", err)
		st.Close()
		c.Close()
		return false
	}
	e.join(c, st, start, nil)
	return true
}
