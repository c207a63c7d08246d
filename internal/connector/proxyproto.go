package connector

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/sallyport/sallyport/internal/config"
)

// writeProxyHeader sends a PROXY protocol header (version v1 or v2) first
// on a new back-end connection, so that the back-end sees the address of
// the client the edge accepted (client, "ip:port") as the source, and its
// own address as the destination. An empty version sends nothing. A client
// address that is not ip:port is sent as UNKNOWN (v1) or LOCAL (v2), which
// back-ends treat as "no client address".
func writeProxyHeader(backend net.Conn, version, client string) error {
	var v byte
	switch version {
	case "":
		return nil
	case config.ProxyV1:
		v = 1
	case config.ProxyV2:
		v = 2
	default:
		return fmt.Errorf("unknown PROXY protocol version %q", version)
	}
	var src net.Addr = &net.UnixAddr{} // not TCP: the header says "unknown"
	if ap, err := netip.ParseAddrPort(client); err == nil {
		src = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	h := proxyproto.HeaderProxyFromAddrs(v, src, backend.RemoteAddr())
	backend.SetWriteDeadline(time.Now().Add(headerTimeout))
	defer backend.SetWriteDeadline(time.Time{})
	if _, err := h.WriteTo(backend); err != nil {
		return fmt.Errorf("send PROXY %s header: %w", version, err)
	}
	return nil
}
