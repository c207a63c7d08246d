package ingress

import (
	"context"
	"net"

	"github.com/sallyport/sallyport/internal/pipe"
)

// tcpListener is a service's own port: every connection goes to that one
// service, raw bytes both ways.
type tcpListener struct {
	s       *Set
	service string
	l       net.Listener
	tr      *pipe.Tracker // its client connections
}

func (t *tcpListener) serve(ctx context.Context) {
	t.s.accept(ctx, "service "+t.service, t.l, t.tr, t.handle)
}
func (t *tcpListener) drain() {}
func (t *tcpListener) close() {}

// handle carries one client connection through a tunnel that offers the
// service, if the service's policy lets the client in. It owns c and
// closes it.
func (t *tcpListener) handle(c net.Conn) (joined bool) {
	start := t.s.now()
	cl := client(c, "tcp")
	st, ref := t.s.reach(t.service, cl)
	if ref != nil {
		// A plain close, even if the client has already sent bytes.
		pipe.CloseGently(c)
		return false
	}
	t.s.join(c, st, cl, start, nil)
	return true
}
