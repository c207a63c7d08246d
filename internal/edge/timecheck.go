package edge

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// serveTime answers a time request (`sallyport doctor` measuring clock
// skew) with the edge's clock, and closes tc. It needs no client
// certificate: the time is no secret, and the asker is bounded like any
// other opening. It changes nothing and is not audited.
func (e *Edge) serveTime(tc *tls.Conn, body []byte, log *slog.Logger) {
	defer tc.Close()
	if err := wire.Decode(wire.KindTimeRequest, body, &wire.TimeRequest{}); err != nil {
		e.strangerWarn(log, "tunnel port: bad time request", "err", err)
		tunnel.Refuse(tc, &wire.Refusal{Code: wire.CodeBadRequest, Reason: err.Error()})
		return
	}
	tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteMessage(tc, wire.KindTimeResponse, wire.TimeResponse{Time: e.now().UTC()}); err != nil {
		log.Debug("time request: answer not sent", "err", err)
		return
	}
	log.Debug("time request answered")
}
