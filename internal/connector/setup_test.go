package connector

import (
	"slices"
	"testing"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/wire"
)

// The edges a restarted connector dials besides its own addresses are
// those the cluster announced, as the connector saved them: one address
// per edge, not the edge its own address answered as, within
// tunnel.max_edges.
func TestAnnouncedEdges(t *testing.T) {
	cfg := config.Connector{DataDir: t.TempDir(), Services: map[string]config.ConnectorService{"echo": {Address: "127.0.0.1:7"}}}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	own := "edge.example.com:5500" // answered as edge-a
	c.fleet.loops = map[string]*edgeLoop{"addr " + own: {addr: own, own: true, edgeID: "edge-a"}}
	c.saveCluster([]wire.EdgeAddr{
		{ID: "edge-a", Address: "10.0.0.1:5500"},
		{ID: "edge-b", Address: "10.0.0.2:5500"},
		{ID: "edge-b", Address: "[2001:db8::2]:5500"},
		{ID: "edge-c", Address: "10.0.0.3:5500"},
	})
	s := Setup{Edges: []string{own}}

	got, err := AnnouncedEdges(cfg, s)
	if want := []string{"10.0.0.2:5500", "10.0.0.3:5500"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("announced edges %v, %v; want %v", got, err, want)
	}

	cfg.Tunnel.MaxEdges = 1 // of three: one is kept, and it may be edge-a
	got, err = AnnouncedEdges(cfg, s)
	kept := rendezvous("", []string{"edge-a", "edge-b", "edge-c"}, 1)
	var want []string // edge-a kept: its own address reaches it, nothing more is dialled
	switch {
	case kept["edge-b"]:
		want = []string{"10.0.0.2:5500"}
	case kept["edge-c"]:
		want = []string{"10.0.0.3:5500"}
	}
	if err != nil || !slices.Equal(got, want) || len(kept) != 1 {
		t.Fatalf("with max_edges 1 (keeping %v): %v, %v; want %v", kept, got, err, want)
	}

	none, err := AnnouncedEdges(config.Connector{DataDir: t.TempDir()}, s)
	if err != nil || none != nil {
		t.Fatalf("no saved cluster: %v, %v", none, err)
	}
}
