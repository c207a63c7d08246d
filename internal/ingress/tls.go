package ingress

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/pipe"
)

// tlsListener is a tls listener: it reads each client's ClientHello
// without decrypting anything, routes the connection by its server name
// (SNI), and passes every byte through to the service's back-end, which
// terminates TLS itself.
type tlsListener struct {
	s  *Set
	l  net.Listener
	tr *pipe.Tracker // its client connections
}

func (t *tlsListener) serve(ctx context.Context) { t.s.accept(ctx, "tls", t.l, t.tr, t.handle) }
func (t *tlsListener) drain()                    {}
func (t *tlsListener) close()                    {}

// handle serves one client. It owns c and closes it.
func (t *tlsListener) handle(c net.Conn) (joined bool) {
	s := t.s
	start := s.now()
	cl := client(c, "tls")
	c.SetDeadline(start.Add(handshakeTimeout))
	hello, name, err := readClientHello(c)
	var ref *admission.Refusal
	alert := byte(0)
	switch {
	case errors.Is(err, errNotTLS):
		ref = admission.Refuse(admission.ReasonNotTLS, "", "not a TLS ClientHello: %v", err)
	case errors.Is(err, errBadHello):
		// Unlike other bytes that are not TLS, a broken ClientHello gets
		// an alert: its sender speaks TLS.
		ref, alert = admission.Refuse(admission.ReasonNotTLS, "", "%v", err), alertHandshakeFailure
	case err != nil:
		s.log.Debug("TLS client went away before its ClientHello", "client", cl.Addr.String(), "err", err)
		c.Close()
		return false
	case name == "":
		ref = admission.Refuse(admission.ReasonNoSNI, "", "TLS ClientHello without a server name (SNI); this listener routes by it")
	}
	if ref == nil {
		service, ok := s.current().sni.Lookup(name)
		if !ok {
			ref = admission.Refuse(admission.ReasonUnroutedSNI, "", "no service is published at TLS server name %q", name)
		} else if st, ref := s.reach(service, cl); ref == nil {
			return t.pass(c, st, cl, hello, start)
		} else {
			tellTLS(c, ref, 0)
			return false
		}
	}
	s.d.Refused(ref, cl)
	tellTLS(c, ref, alert)
	return false
}

// tellTLS sends the alert that answers ref (alert, if not zero, instead)
// and closes c.
func tellTLS(c net.Conn, ref *admission.Refusal, alert byte) {
	if alert == 0 {
		alert = answerFor(ref).tls
	}
	if alert != 0 {
		c.Write(tlsAlert(alert))
	}
	c.Close()
}

// pass sends the ClientHello already read on st, then joins c and st. It
// owns c and st and closes them.
func (t *tlsListener) pass(c net.Conn, st Stream, cl admission.Client, hello []byte, start time.Time) (joined bool) {
	c.SetDeadline(time.Time{})
	if _, err := st.Write(hello); err != nil {
		t.s.log.Warn("client connection closed: the tunnel failed", "via", cl.Via, "service", st.Service(), "client", cl.Addr.String(), "err", err)
		st.Close()
		c.Close()
		return false
	}
	t.s.join(c, st, cl, start, nil)
	return true
}
