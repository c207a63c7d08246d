package edge

import (
	"context"
	"net/http"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/wire"
)

// WebSocket close codes the edge uses to refuse a client (RFC 6455 and the
// IANA registry).
const (
	wsPolicy     = websocket.StatusPolicyViolation // 1008: unknown service, address or certificate refused
	wsTryLater   = websocket.StatusTryAgainLater   // 1013: no connector, limits reached, connector draining
	wsInternal   = websocket.StatusInternalError   // 1011: the tunnel failed
	wsBadGateway = websocket.StatusBadGateway      // 1014: the connector could not reach the back-end
)

// serveWS upgrades a request for /ws/<service> to a WebSocket and carries
// the service's TCP stream in its binary messages, both ways. A refused
// client gets the WebSocket, then a close frame whose code and reason say
// why, which a browser page can read (it cannot read an HTTP status).
func (e *Edge) serveWS(w http.ResponseWriter, r *http.Request, service string, c client, origins []string) {
	start := e.now()
	c.via += "+ws"
	release, ref := e.admit(service, c)
	wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: origins})
	if err != nil {
		// Accept has answered: 403 for a foreign origin, 426 for a
		// request that is not a WebSocket upgrade.
		if release != nil {
			release()
		}
		e.log.Warn("WebSocket refused", "via", c.via, "client", c.addr.String(), "service", service,
			"origin", r.Header.Get("Origin"), "err", err)
		return
	}
	if ref != nil {
		wc.Close(wsCloseCode(ref.reason), closeReason(ref.msg))
		return
	}
	st, ref := e.openStream(service, c)
	if ref != nil {
		release()
		wc.Close(wsCloseCode(ref.reason), closeReason(ref.msg))
		return
	}
	st.release = release
	st.onRefusal = func(wr *wire.Refusal) {
		code := wsBadGateway
		if wr.Code == wire.CodeDraining {
			code = wsTryLater
		}
		wc.Close(code, closeReason("service "+service+": "+wr.Reason))
	}
	nc := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	// The HTTP handler lasts as long as the exchange.
	done := make(chan struct{})
	e.join(nc, st, start, func() { close(done) })
	<-done
}

// wsCloseCode is the close code for a refusal.
func wsCloseCode(r Reason) websocket.StatusCode {
	switch r {
	case ReasonUnknownService, ReasonDenied, ReasonClientCert:
		return wsPolicy
	case ReasonNoConnector, ReasonMaxConnections, ReasonRate:
		return wsTryLater
	}
	return wsInternal
}

// closeReason cuts a reason to the 123 bytes a close frame can carry,
// on a character boundary.
func closeReason(s string) string {
	const max = 123
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
