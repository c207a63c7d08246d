package ingress

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/wire"
)

// answer is how each protocol tells a client it was refused: an HTTP
// status (with Retry-After: 1 when retry is set), a SOCKS5 reply code, a
// WebSocket close code and a TLS alert (0: the connection is just closed).
type answer struct {
	http  int
	retry bool
	socks socksReply
	ws    websocket.StatusCode
	tls   byte
}

// The WebSocket close codes the edge refuses with (RFC 6455 and IANA).
const (
	wsPolicy     = websocket.StatusPolicyViolation // 1008: unknown service, address or certificate refused
	wsTryLater   = websocket.StatusTryAgainLater   // 1013: no connector, limits reached, connector draining
	wsInternal   = websocket.StatusInternalError   // 1011: the tunnel failed
	wsBadGateway = websocket.StatusBadGateway      // 1014: the connector could not reach the back-end
)

// fallback answers a refusal the tables below do not name.
var fallback = answer{http: http.StatusBadGateway, socks: socksGeneralFailure, ws: wsInternal, tls: alertInternalError}

// edgeAnswers answers the edge's own refusals, by reason. Reasons that
// arise before a listener can answer in its protocol (not_http,
// socks_protocol) are not here; a tls listener answers a malformed
// ClientHello with handshake_failure, other bytes that are not TLS with a
// plain close.
var edgeAnswers = map[admission.Reason]answer{
	admission.ReasonUnknownHost:       {http: http.StatusNotFound, socks: socksHostUnreachable, ws: wsPolicy, tls: alertUnrecognizedName},
	admission.ReasonUnknownService:    {http: http.StatusNotFound, socks: socksHostUnreachable, ws: wsPolicy, tls: alertInternalError},
	admission.ReasonNoSNI:             {http: http.StatusNotFound, socks: socksGeneralFailure, ws: wsPolicy, tls: alertUnrecognizedName},
	admission.ReasonUnroutedSNI:       {http: http.StatusNotFound, socks: socksGeneralFailure, ws: wsPolicy, tls: alertUnrecognizedName},
	admission.ReasonNotTLS:            {http: http.StatusBadRequest, socks: socksGeneralFailure, ws: wsPolicy, tls: 0},
	admission.ReasonDenied:            {http: http.StatusForbidden, socks: socksNotAllowed, ws: wsPolicy, tls: alertAccessDenied},
	admission.ReasonClientCert:        {http: http.StatusForbidden, socks: socksNotAllowed, ws: wsPolicy, tls: alertInternalError},
	admission.ReasonMaxConnections:    {http: http.StatusServiceUnavailable, retry: true, socks: socksNotAllowed, ws: wsTryLater, tls: alertAccessDenied},
	admission.ReasonRate:              {http: http.StatusTooManyRequests, retry: true, socks: socksNotAllowed, ws: wsTryLater, tls: alertAccessDenied},
	admission.ReasonNoConnector:       {http: http.StatusServiceUnavailable, retry: true, socks: socksNetworkUnreachable, ws: wsTryLater, tls: alertInternalError},
	admission.ReasonAddressNotAllowed: {http: http.StatusNotFound, socks: socksHostUnreachable, ws: wsPolicy, tls: alertInternalError},
	admission.ReasonSessionRequired:   {http: http.StatusForbidden, socks: socksNotAllowed, ws: wsPolicy, tls: alertAccessDenied},
	admission.ReasonSession:           {http: http.StatusForbidden, socks: socksNotAllowed, ws: wsPolicy, tls: alertAccessDenied},
	admission.ReasonStoreLost:         {http: http.StatusServiceUnavailable, retry: true, socks: socksNetworkUnreachable, ws: wsTryLater, tls: alertInternalError},
	admission.ReasonConnectorTimeout:  {http: http.StatusServiceUnavailable, retry: true, socks: socksNetworkUnreachable, ws: wsTryLater, tls: alertInternalError},
}

// connectorAnswers answers a connector's refusal of a stream, by its code.
var connectorAnswers = map[wire.Code]answer{
	wire.CodeUnknownService:     {http: http.StatusBadGateway, socks: socksHostUnreachable, ws: wsBadGateway, tls: alertInternalError},
	wire.CodeBackendUnreachable: {http: http.StatusBadGateway, socks: socksConnectionRefused, ws: wsBadGateway, tls: alertInternalError},
	wire.CodeDraining:           {http: http.StatusServiceUnavailable, socks: socksNetworkUnreachable, ws: wsTryLater, tls: alertInternalError},
	// The edge ends a revoked session's connection with this code.
	wire.CodeRevoked: {http: http.StatusForbidden, socks: socksNotAllowed, ws: wsPolicy, tls: alertAccessDenied},
}

// connectorFallback answers a connector's refusal with another code.
var connectorFallback = answer{http: http.StatusBadGateway, socks: socksGeneralFailure, ws: wsBadGateway, tls: alertInternalError}

// connectorSays is the sentence that tells a client of the connector's
// refusal: the service, once, and the connector's reason (which names the
// service itself: service "wiki": back-end unreachable).
func connectorSays(service string, wr *wire.Refusal) string {
	if strings.HasPrefix(wr.Reason, "service ") {
		return wr.Reason
	}
	return fmt.Sprintf("service %q: %s", service, wr.Reason)
}

// answerFor returns how to answer err: an *admission.Refusal, a
// *wire.Refusal, or anything else (the fallback).
func answerFor(err error) answer {
	var ref *admission.Refusal
	var wr *wire.Refusal
	switch {
	case errors.As(err, &ref):
		if a, ok := edgeAnswers[ref.Reason]; ok {
			return a
		}
	case errors.As(err, &wr):
		if a, ok := connectorAnswers[wr.Code]; ok {
			return a
		}
		return connectorFallback
	}
	return fallback
}
