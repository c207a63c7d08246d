package ingress

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/wire"
)

// Every refusal a client can be told of has its answer in every protocol,
// and the answers a client notices keep their meaning: a refusal that may
// pass says so (503/429 with Retry-After, SOCKS "network unreachable" or
// "not allowed", WebSocket 1013), a refusal that will not pass does not.
func TestAnswers(t *testing.T) {
	told := []admission.Reason{
		admission.ReasonUnknownHost, admission.ReasonUnknownService, admission.ReasonNoSNI,
		admission.ReasonUnroutedSNI, admission.ReasonDenied, admission.ReasonClientCert,
		admission.ReasonMaxConnections, admission.ReasonRate, admission.ReasonNoConnector,
	}
	for _, r := range told {
		if _, ok := edgeAnswers[r]; !ok {
			t.Errorf("reason %s has no answer", r)
		}
	}
	tests := []struct {
		err   error
		http  int
		retry bool
		socks socksReply
		ws    int
		tls   byte
	}{
		{admission.Refuse(admission.ReasonUnknownHost, "", "x"), http.StatusNotFound, false, socksHostUnreachable, 1008, alertUnrecognizedName},
		{admission.Refuse(admission.ReasonUnknownService, "", "x"), http.StatusNotFound, false, socksHostUnreachable, 1008, alertInternalError},
		{admission.Refuse(admission.ReasonNotTLS, "", "x"), http.StatusBadRequest, false, socksGeneralFailure, 1008, 0},
		{admission.Refuse(admission.ReasonDenied, "", "x"), http.StatusForbidden, false, socksNotAllowed, 1008, alertAccessDenied},
		{admission.Refuse(admission.ReasonMaxConnections, "", "x"), http.StatusServiceUnavailable, true, socksNotAllowed, 1013, alertAccessDenied},
		{admission.Refuse(admission.ReasonRate, "", "x"), http.StatusTooManyRequests, true, socksNotAllowed, 1013, alertAccessDenied},
		{admission.Refuse(admission.ReasonNoConnector, "", "x"), http.StatusServiceUnavailable, true, socksNetworkUnreachable, 1013, alertInternalError},
		{admission.Refuse(admission.ReasonTunnel, "", "x"), http.StatusBadGateway, false, socksGeneralFailure, 1011, alertInternalError},
		{&wire.Refusal{Code: wire.CodeUnknownService}, http.StatusBadGateway, false, socksHostUnreachable, 1014, alertInternalError},
		{&wire.Refusal{Code: wire.CodeBackendUnreachable}, http.StatusBadGateway, false, socksConnectionRefused, 1014, alertInternalError},
		{&wire.Refusal{Code: wire.CodeDraining}, http.StatusServiceUnavailable, false, socksNetworkUnreachable, 1013, alertInternalError},
		{&wire.Refusal{Code: wire.CodeInternal}, http.StatusBadGateway, false, socksGeneralFailure, 1014, alertInternalError},
		{fmt.Errorf("stream: %w", &wire.Refusal{Code: wire.CodeDraining}), http.StatusServiceUnavailable, false, socksNetworkUnreachable, 1013, alertInternalError},
		{fmt.Errorf("something else"), http.StatusBadGateway, false, socksGeneralFailure, 1011, alertInternalError},
	}
	for _, tt := range tests {
		a := answerFor(tt.err)
		if a.http != tt.http || a.retry != tt.retry || a.socks != tt.socks || int(a.ws) != tt.ws || a.tls != tt.tls {
			t.Errorf("%v: answer %+v; want http %d retry %v, socks %d, ws %d, tls alert %d", tt.err, a, tt.http, tt.retry, tt.socks, tt.ws, tt.tls)
		}
	}
}
