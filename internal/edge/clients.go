package edge

import (
	"cmp"
	"context"
	"errors"
	"net"
	"slices"
	"time"

	"github.com/sallyport/sallyport/internal/pipe"
	"github.com/sallyport/sallyport/internal/wire"
)

// acceptClients accepts client connections for a tcp service until l is
// closed. A transient accept error (out of file descriptors) is retried
// after a pause instead of ending the listener.
func (e *Edge) acceptClients(ctx context.Context, service string, l net.Listener) {
	var pause time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			e.log.Warn("accept failed; retrying", "service", service, "err", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return
			}
			continue
		}
		pause = 0
		e.clients.Add(c)
		e.handlers.Go(func() {
			defer e.clients.Done(c)
			e.serveClient(service, c)
		})
	}
}

// serveClient carries one client connection through a tunnel that offers
// service. It owns c and closes it.
func (e *Edge) serveClient(service string, c net.Conn) {
	start := e.now()
	client := c.RemoteAddr().String()
	sess, ok := e.routes.Pick(service)
	if !ok {
		e.log.Warn("client refused: no connector offers the service", "service", service, "client", client)
		c.Close()
		return
	}
	e.mu.Lock()
	info := e.tunnels[sess]
	e.mu.Unlock()
	connector := ""
	if info != nil {
		connector = info.connectorID
	}
	st, err := sess.Open(wire.StreamOpen{Service: service, Client: client})
	if err != nil {
		e.log.Warn("client refused: tunnel failed", "service", service, "client", client, "connector", connector, "err", err)
		c.Close()
		return
	}
	res := pipe.Join(c, st)
	args := []any{"service", service, "client", client, "connector", connector,
		"bytes_in", res.AToB, "bytes_out", res.BToA, "duration", e.now().Sub(start).Round(time.Microsecond).String()}
	var ref *wire.Refusal
	switch {
	case errors.As(res.Err, &ref):
		if ref.Code == wire.CodeDraining && e.routes.Remove(sess) {
			// The connector is shutting down: send later clients elsewhere.
			e.log.Info("connector draining: no more clients routed to this tunnel", "connector", connector)
		}
		e.log.Warn("client refused by connector", append(args, "code", ref.Code.String(), "reason", ref.Reason)...)
	case res.Err != nil:
		e.log.Info("client connection closed", append(args, "err", res.Err)...)
	default:
		e.log.Info("client connection closed", args...)
	}
}

func sortBy[T any](s []T, key func(T) string) {
	slices.SortFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}
