package edge

import (
	"cmp"
	"context"
	"net"
	"slices"
)

// acceptClients accepts client connections for a tcp service until l is
// closed.
func (e *Edge) acceptClients(ctx context.Context, service string, l net.Listener) {
	e.accept(ctx, "service "+service, l, func(c net.Conn) { e.serveClient(service, c) })
}

// serveClient carries one client connection through a tunnel that offers
// service, if the service's policy lets the client in. It owns c and
// closes it.
func (e *Edge) serveClient(service string, c net.Conn) {
	start := e.now()
	st, ref := e.reach(service, client{addr: c.RemoteAddr(), via: "tcp"})
	if ref != nil {
		c.Close()
		return
	}
	e.join(c, st, start)
}

func sortBy[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}
