package ingress

import (
	"context"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/wire"
)

// serveWS upgrades a request for /ws/<service> to a WebSocket and carries
// the service's TCP stream in its binary messages, both ways. A refused
// client gets the WebSocket, then a close frame whose code and reason say
// why, which a browser page can read (it cannot read an HTTP status).
func (s *Set) serveWS(w http.ResponseWriter, r *http.Request, service string, c admission.Client, origins []string) {
	start := s.now()
	c.Via += "+ws"
	release, ref := s.d.Admit(service, c)
	wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: origins})
	if err != nil {
		// Accept has answered: 403 for a foreign origin, 426 for a
		// request that is not a WebSocket upgrade.
		if release != nil {
			release()
		}
		s.log.Warn("WebSocket refused", "via", c.Via, "client", c.Addr.String(), "service", service,
			"origin", r.Header.Get("Origin"), "err", err)
		return
	}
	if ref != nil {
		wc.Close(answerFor(ref).ws, closeReason(ref.Msg))
		return
	}
	st, ref := s.d.Open(service, c)
	if ref != nil {
		release()
		wc.Close(answerFor(ref).ws, closeReason(ref.Msg))
		return
	}
	st.Hold(release)
	s.carryWS(wc, st, c, start)
}

// carryWS carries st over wc's binary messages, both ways, until the
// exchange ends; a refusal by the connector closes wc with its reason.
// It owns wc and st.
func (s *Set) carryWS(wc *websocket.Conn, st Stream, c admission.Client, start time.Time) {
	service := st.Service()
	st.OnRefusal(func(wr *wire.Refusal) {
		wc.Close(answerFor(wr).ws, closeReason(connectorSays(service, wr)))
	})
	nc := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	// The HTTP handler lasts as long as the exchange.
	done := make(chan struct{})
	s.join(nc, st, c, start, func() { close(done) })
	<-done
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
