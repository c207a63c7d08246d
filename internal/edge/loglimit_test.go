package edge

import (
	"net"
	"testing"
	"time"

	"log/slog"

	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/logbuf"
)

// A flood of refusals writes a few lines a second per reason, not one per
// connection; every refusal is still counted, and the next line says how
// many went unlogged.
func TestRefusalLinesAreBounded(t *testing.T) {
	logs := &logbuf.Buffer{}
	e, err := New(config.Edge{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	e.now = func() time.Time { return clock }
	client := admission.Client{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}, Via: "tcp"}
	for range 1000 {
		e.Refused(admission.Refuse(admission.ReasonDenied, "db", "service db does not let in clients from 192.0.2.1"), client)
	}
	e.Refused(admission.Refuse(admission.ReasonRate, "db", "too fast"), client)
	if n := logs.Count("reason=address_denied"); n != refusalLinesPerSecond {
		t.Errorf("1,000 refusals in one second wrote %d lines, want %d", n, refusalLinesPerSecond)
	}
	if n := logs.Count("reason=rate_limited"); n != 1 {
		t.Errorf("another reason's refusal was not logged (%d lines)", n)
	}
	if n := e.refusals.Snapshot()["address_denied"]; n != 1000 {
		t.Errorf("counted %d refusals, want every one of 1,000", n)
	}
	clock = clock.Add(time.Second)
	e.Refused(admission.Refuse(admission.ReasonDenied, "db", "service db does not let in clients from 192.0.2.1"), client)
	if n := logs.Count("reason=address_denied", "more_refused_unlogged=990"); n != 1 {
		t.Errorf("the next second's first line does not say that 990 went unlogged:\n%s", logs.Tail(3))
	}
}
