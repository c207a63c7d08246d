package connector

import (
	"testing"

	"github.com/sallyport/sallyport/internal/config"
)

// tunnel.receive_budget_mib reaches the tunnels the connector dials, and
// its default is the edge's.
func TestReceiveBudgetReachesTunnels(t *testing.T) {
	for _, tc := range []struct {
		mib  int
		want int64
	}{
		{0, config.DefaultReceiveBudgetMiB << 20},
		{8, 8 << 20},
	} {
		cfg := config.Connector{
			DataDir:  t.TempDir(),
			Tunnel:   config.ConnectorTunnel{ReceiveBudgetMiB: tc.mib},
			Services: map[string]config.ConnectorService{"db": {Address: "127.0.0.1:5432"}},
		}
		c, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.tunnelConfig().ReceiveBudget; got != tc.want {
			t.Errorf("receive_budget_mib %d: the tunnels' receive budget is %d bytes, want %d", tc.mib, got, tc.want)
		}
	}
}
