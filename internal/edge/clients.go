package edge

import (
	"cmp"
	"context"
	"net"
	"slices"

	"github.com/sallyport/sallyport/internal/pipe"
)

// acceptClients accepts client connections for a tcp service until l is
// closed.
func (e *Edge) acceptClients(ctx context.Context, service string, l net.Listener) {
	e.accept(ctx, "service "+service, l, func(c net.Conn) bool { return e.serveClient(service, c) })
}

// serveClient carries one client connection through a tunnel that offers
// service, if the service's policy lets the client in. It owns c and
// closes it.
func (e *Edge) serveClient(service string, c net.Conn) (joined bool) {
	start := e.now()
	st, ref := e.reach(service, client{addr: c.RemoteAddr(), via: "tcp"})
	if ref != nil {
		// A plain close, even if the client has already sent bytes.
		pipe.CloseGently(c)
		return false
	}
	e.join(c, st, start, nil)
	return true
}

func sortBy[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}
