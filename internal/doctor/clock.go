package doctor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// clock asks the edge for its time over tc (a time request: step 2c of
// the wire protocol) and reports the skew between its clock and this
// host's. The edge's first answer also carries its verdict on the
// connector's certificate: a refusal of it turns the TLS check into a
// failure.
func (p *probe) clock(ctx context.Context, tc *tls.Conn) {
	var resp wire.TimeResponse
	var sent, got time.Time
	err := tunnel.Handshake(ctx, tc, p.timeout, func() error {
		sent = p.opts.Now()
		if err := wire.WriteMessage(tc, wire.KindTimeRequest, wire.TimeRequest{}); err != nil {
			return err
		}
		err := wire.ReadExpect(tc, wire.KindTimeResponse, &resp)
		got = p.opts.Now()
		return err
	})
	var alert tls.AlertError
	var ref *wire.Refusal
	var ve *wire.VersionError
	switch {
	case err == nil:
		status, detail := judgeSkew(resp.Time, sent, got)
		p.add(CheckClock, status, "%s", detail)
	case errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:"):
		p.failTLS(err)
		p.add(CheckClock, Skip, "not tried: the edge refused the TLS handshake")
	case errors.As(err, &ref):
		p.add(CheckClock, Fail, "the edge refuses: %s", ref.Reason)
	case errors.As(err, &ve):
		p.add(CheckClock, Fail, "%v", ve)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		p.add(CheckClock, Warn, "the edge closed the connection without telling its time: it may run an older sallyport, which cannot be asked")
	default:
		p.add(CheckClock, Fail, "asking the edge's time: %v", err)
	}
}

// failTLS turns the TLS row, passed on this side, into the failure the
// edge's alert reports: it refused the connector's certificate.
func (p *probe) failTLS(err error) {
	for i := range p.rows {
		if p.rows[i].Check != CheckTLS {
			continue
		}
		p.rows[i].Status = Fail
		p.rows[i].Detail = fmt.Sprintf("the edge refused this connector's certificate: %v", err)
		if strings.Contains(err.Error(), "expired certificate") {
			p.rows[i].Detail += ": by the edge's clock it has expired; if the clocks agree, enroll again with a new keyfile (sallyport token create --replace)"
		}
	}
}

// judgeSkew compares the edge's time, read between sent and got by this
// host's clock, with the middle of the two: the skew, give or take half
// the round trip. It warns when the clocks surely differ by more than
// skewWarn, and fails when they surely differ by more than pki.ClockSkew.
func judgeSkew(edge, sent, got time.Time) (Status, string) {
	rtt := got.Sub(sent)
	skew := edge.Sub(sent.Add(rtt / 2))
	within := rtt / 2
	dir, size := "ahead of", skew
	if skew < 0 {
		dir, size = "behind", -skew
	}
	detail := fmt.Sprintf("the edge's clock is %s %s this host's (±%s)", roundSkew(size), dir, roundSkew(within))
	switch sure := size - within; {
	case sure > pki.ClockSkew:
		return Fail, detail + fmt.Sprintf(": more than the %s sallyport tolerates; certificates and tokens would be judged wrongly: synchronise both clocks (NTP)", pki.ClockSkew)
	case sure > skewWarn:
		return Warn, detail + ": synchronise both clocks (NTP)"
	}
	return OK, detail
}

// roundSkew rounds d for a detail: microseconds below a millisecond,
// milliseconds below a minute, seconds above.
func roundSkew(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < time.Minute:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
