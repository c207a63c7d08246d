package doctor

import (
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/connector"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
)

// The certificate check by the clock: ok before the renewal time, a
// warning after it (a renewal that should have happened), a failure once
// expired; before enrollment, by the keyfile's token.
func TestCertificateCheckByTime(t *testing.T) {
	ca := pkitest.NewCA(t)
	cert, _ := pkitest.Connector(t, ca, "site-a", 7*24*time.Hour)
	leaf := cert.Leaf
	enrolled := connector.Setup{Cert: &cert}
	kf := &enroll.Keyfile{Name: "site-a", Expires: leaf.NotAfter}
	cfg := config.Connector{DataDir: "/var/lib/sallyport/connector"}
	for _, c := range []struct {
		name   string
		setup  connector.Setup
		now    time.Time
		status Status
		words  string
	}{
		{"fresh", enrolled, pki.RenewAt(leaf).Add(-time.Second), OK, "renewed online from"},
		{"renewal due", enrolled, pki.RenewAt(leaf).Add(time.Second), Warn, "due for renewal"},
		{"expired", enrolled, leaf.NotAfter, Fail, "--replace"},
		{"keyfile", connector.Setup{Keyfile: kf}, kf.Expires.Add(-time.Second), OK, "not enrolled yet"},
		{"keyfile expired", connector.Setup{Keyfile: kf}, kf.Expires, Fail, "token expired"},
		{"nothing", connector.Setup{}, leaf.NotBefore, Fail, "no keyfile is given"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := certificateCheck(c.setup, cfg, c.now)
			if r.Status != c.status || !strings.Contains(r.Detail, c.words) {
				t.Fatalf("%s (%s), want %s with %q", r.Status, r.Detail, c.status, c.words)
			}
		})
	}
}

// The skew is the edge's time against the middle of the round trip, and
// is judged on what it surely is: less the half round trip.
func TestJudgeSkew(t *testing.T) {
	sent := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name      string
		edge, got time.Time
		status    Status
		words     string
	}{
		{"in step", sent.Add(5 * time.Millisecond), sent.Add(10 * time.Millisecond), OK, "0s ahead of this host's (±5ms)"},
		{"ahead", sent.Add(3 * time.Second), sent.Add(10 * time.Millisecond), Warn, "2.995s ahead of"},
		{"behind by no more than the round trip", sent.Add(-time.Second), sent.Add(2 * time.Second), OK, "2s behind this host's (±1s)"},
		{"far behind", sent.Add(-time.Hour), sent.Add(10 * time.Millisecond), Fail, "more than the 5m0s sallyport tolerates"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, detail := judgeSkew(c.edge, sent, c.got)
			if status != c.status || !strings.Contains(detail, c.words) {
				t.Fatalf("%s (%s), want %s with %q", status, detail, c.status, c.words)
			}
		})
	}
}
