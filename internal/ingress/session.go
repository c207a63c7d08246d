package ingress

import (
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admission"
)

// Session links. A client presents a one-time session token either in
// the path, /s/<token>, or, so that the token appears in no URL and no
// access log, at /s/ with the subprotocol SessionSubprotocol+<token> in
// its Sec-WebSocket-Protocol header. The edge echoes the subprotocol
// "sallyport.session" if the client offered it too (a client that would
// rather not see its token come back), else the token's own.
const (
	SessionSubprotocol = "sallyport.session."
	sessionProtocol    = "sallyport.session"
)

// sessionToken returns the token a request presents, in its path (a
// non-empty pathToken) or its subprotocols, and the subprotocol that
// carried it, if any. Two different tokens present none: such a client
// gets "unknown session link".
func sessionToken(r *http.Request, pathToken string) (token, subprotocol string) {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			p = strings.TrimSpace(p)
			if t, ok := strings.CutPrefix(p, SessionSubprotocol); ok && subprotocol == "" {
				token, subprotocol = t, p
			}
		}
	}
	switch {
	case pathToken == "":
		return token, subprotocol
	case subprotocol != "" && token != pathToken:
		return "", subprotocol
	}
	return pathToken, subprotocol
}

// serveSession upgrades a request for a session link to a WebSocket and,
// if the Dispatcher redeems its token, carries the session's service in
// its binary messages as serveWS does. The upgrade comes first, so that
// a request that is not a WebSocket (a link preview, say) never uses the
// link up; a refused client gets a close frame whose reason says why
// ("session link already used", ...). Refusals of a source address that
// keeps presenting bad links are answered ever more slowly (the SOCKS
// listener's login backoff), so links cannot be guessed at network speed.
// The token is never logged.
func (s *Set) serveSession(w http.ResponseWriter, r *http.Request, pathToken string, c admission.Client, origins []string) {
	start := s.now()
	c.Via += "+ws"
	token, subprotocol := sessionToken(r, pathToken)
	opts := &websocket.AcceptOptions{OriginPatterns: origins}
	if subprotocol != "" {
		opts.Subprotocols = []string{sessionProtocol, subprotocol}
	}
	wc, err := websocket.Accept(w, r, opts)
	if err != nil {
		s.log.Warn("WebSocket refused", "via", c.Via, "client", c.Addr.String(), "session_link", true,
			"origin", r.Header.Get("Origin"), "err", err)
		return
	}
	st, ref := s.d.OpenSession(token, c)
	if ref != nil {
		if ref.Reason == admission.ReasonSession {
			if d := s.sessionBackoff.Failed(c.IP(), s.now()); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-r.Context().Done():
				}
				t.Stop()
			}
		}
		wc.Close(answerFor(ref).ws, closeReason(ref.Msg))
		return
	}
	s.sessionBackoff.Succeeded(c.IP())
	s.carryWS(wc, st, c, start)
}
