package edge

import (
	"net"
	"slices"
	"testing"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/store"
)

// Keyfiles carry the configured addresses, else the listener's own; an
// edge that listens on every interface advertises its non-loopback IP
// addresses (a host name is often not resolvable where connectors run),
// and says it guessed.
func TestAdvertised(t *testing.T) {
	ifaces := func() ([]net.Addr, error) {
		var out []net.Addr
		for _, s := range []string{"127.0.0.1/8", "192.0.2.10/24", "::1/128", "fe80::1/64", "2001:db8::5/64"} {
			ip, n, _ := net.ParseCIDR(s)
			n.IP = ip
			out = append(out, n)
		}
		return out, nil
	}
	none := func() ([]net.Addr, error) { return nil, nil }
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	tests := []struct {
		name    string
		cfg     []string
		l       net.Addr
		ifaces  func() ([]net.Addr, error)
		want    []string
		guessed bool
	}{
		{"configured", []string{"edge.example.com:5500"}, tcp("[::]:5500"), ifaces, []string{"edge.example.com:5500"}, false},
		{"one address", nil, tcp("192.0.2.10:5500"), ifaces, []string{"192.0.2.10:5500"}, false},
		{"every interface", nil, tcp("[::]:5500"), ifaces, []string{"192.0.2.10:5500", "[2001:db8::5]:5500"}, true},
		{"every IPv4 interface", nil, tcp("0.0.0.0:5500"), ifaces, []string{"192.0.2.10:5500"}, true},
		{"only loopback", nil, tcp("[::]:5500"), none, []string{"127.0.0.1:5500"}, true},
	}
	for _, tt := range tests {
		got, guessed := advertised(tt.cfg, tt.l, tt.ifaces)
		if !slices.Equal(got, tt.want) || guessed != tt.guessed {
			t.Errorf("%s: %v, guessed %v; want %v, %v", tt.name, got, guessed, tt.want, tt.guessed)
		}
	}
}

// A wss:// address among the advertised ones names no host for the
// edge's own certificate (the https listener's is the operator's).
func TestHostsOfSkipsWebSocketAddresses(t *testing.T) {
	got := hostsOf([]string{"edge.example.com:5500", "wss://edge.example.com:443/.sallyport/tunnel", "198.18.2.1:5500"})
	if want := []string{"edge.example.com", "198.18.2.1"}; !slices.Equal(got, want) {
		t.Fatalf("hostsOf = %q, want %q", got, want)
	}
}

// A member's cluster address: cluster.advertise, else derived from
// cluster.listen as the tunnel's is; a host name in listen is kept.
func TestClusterAdvertise(t *testing.T) {
	ifaces := func() ([]net.Addr, error) {
		ip, n, _ := net.ParseCIDR("192.0.2.10/24")
		n.IP = ip
		return []net.Addr{n}, nil
	}
	for _, tt := range []struct {
		cl   config.Cluster
		want string
	}{
		{config.Cluster{}, ""},
		{config.Cluster{Listen: ":6222", Advertise: "edge-b.example.com:6222"}, "edge-b.example.com:6222"},
		{config.Cluster{Listen: ":6222"}, "192.0.2.10:6222"},
		{config.Cluster{Listen: "0.0.0.0:6222"}, "192.0.2.10:6222"},
		{config.Cluster{Listen: "198.18.0.2:6222"}, "198.18.0.2:6222"},
		{config.Cluster{Listen: "edge-b.internal:6222"}, "edge-b.internal:6222"},
	} {
		if got := ClusterAdvertise(tt.cl, ifaces); got != tt.want {
			t.Errorf("ClusterAdvertise(%+v) = %q, want %q", tt.cl, got, tt.want)
		}
	}
}

// A joiner is told this edge's cluster address, its configured routes and
// those its own join gave it, once each, never its own address.
func TestClusterRoutes(t *testing.T) {
	dir := t.TempDir()
	if err := store.WriteClusterFile(dir, []string{"198.18.0.3:6222", "198.18.0.2:6222"}); err != nil {
		t.Fatal(err)
	}
	e := &Edge{cfg: config.Edge{DataDir: dir, Cluster: config.Cluster{Listen: ":6222", Advertise: "198.18.0.1:6222",
		Routes: []string{"198.18.0.2:6222", "198.18.0.9:6222"}}}}
	got := e.clusterRoutes("198.18.0.9:6222")
	if want := []string{"198.18.0.1:6222", "198.18.0.2:6222", "198.18.0.3:6222"}; !slices.Equal(got, want) {
		t.Errorf("clusterRoutes = %v, want %v", got, want)
	}
}
