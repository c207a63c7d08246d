package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestConfigureAddsServices: a service that a reload configures gets
// series of its own from then on; before, it counted under "", as any
// name from outside does; a stream's metrics taken before stay valid.
func TestConfigureAddsServices(t *testing.T) {
	m := NewEdge([]string{"a"}, func() bool { return false }, func() (StoreCluster, bool) { return StoreCluster{}, false })
	before := m.Service("a")
	m.Refused("b", "tcp", "denied")
	if got := testutil.ToFloat64(m.refused.WithLabelValues("", "tcp", "denied")); got != 1 {
		t.Fatalf("an unconfigured service's refusal counted %v under \"\"", got)
	}
	m.Configure([]string{"a", "b"})
	m.Refused("b", "tcp", "denied")
	if got := testutil.ToFloat64(m.refused.WithLabelValues("b", "tcp", "denied")); got != 1 {
		t.Fatalf("a service added by a reload: %v refusals under its name, want 1", got)
	}
	if m.Service("a") != before {
		t.Fatal("a service kept across a reload got new metrics")
	}
	if m.Service("never") != m.Service("") {
		t.Fatal("a name never configured has metrics of its own")
	}
	c := NewConnector([]string{"x"})
	c.Configure([]string{"y"})
	c.StreamOpened("y")
	if got := testutil.ToFloat64(c.service("y").opened); got != 1 {
		t.Fatalf("connector: a service added by a reload counted %v", got)
	}
}
