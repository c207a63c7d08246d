package admission

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/tlsfiles"
)

func tcpClient(addr string) Client {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		panic(err)
	}
	return Client{Addr: a, Via: "tcp"}
}

func nets(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		p, err := ParseClientNet(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestPolicyAddresses(t *testing.T) {
	p := NewPolicy("svc", Rules{Allow: nets(t, "10.0.0.0/8", "2001:db8::/32", "192.0.2.7"), Deny: nets(t, "10.66.0.0/16")})
	now := time.Now()
	for addr, ok := range map[string]bool{
		"10.1.2.3:5":            true,
		"[::ffff:10.1.2.3]:5":   true,
		"192.0.2.7:1":           true,
		"[2001:db8::1]:5":       true,
		"10.66.1.1:5":           false,
		"192.0.2.8:1":           false,
		"127.0.0.1:9":           false,
		"[::ffff:10.66.0.1]:10": false,
	} {
		release, ref := p.Admit(tcpClient(addr), now)
		if ok != (ref == nil) {
			t.Errorf("%s: refusal %v, want admitted=%v", addr, ref, ok)
			continue
		}
		if ref != nil && ref.Reason != ReasonDenied {
			t.Errorf("%s: reason %s, want %s", addr, ref.Reason, ReasonDenied)
		}
		if release != nil {
			release()
		}
	}
}

// A zoned IPv6 address (fe80::1%eth0) is matched without its zone: a
// prefix never contains a zoned address, so the zone would slip past a
// deny list.
func TestPolicyDenyIgnoresTheZone(t *testing.T) {
	p := NewPolicy("svc", Rules{Deny: nets(t, "fe80::/10")})
	for _, addr := range []string{"[fe80::1%eth0]:5", "[fe80::1]:5"} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, ref := p.Admit(Client{Addr: a, Via: "tcp"}, time.Now()); ref == nil || ref.Reason != ReasonDenied {
			t.Errorf("%s: %v, want refused by the deny list", addr, ref)
		}
	}
}

func TestPolicyMaxConnections(t *testing.T) {
	p := NewPolicy("svc", Rules{MaxConnections: 2})
	now := time.Now()
	c := tcpClient("127.0.0.1:1")
	r1, _ := p.Admit(c, now)
	r2, _ := p.Admit(c, now)
	if _, ref := p.Admit(c, now); ref == nil || ref.Reason != ReasonMaxConnections {
		t.Fatalf("third connection: %v, want refused for max_connections", ref)
	}
	r1()
	r1() // a second release gives back nothing more
	r3, ref := p.Admit(c, now)
	if ref != nil {
		t.Fatalf("after a release: %v", ref)
	}
	if _, ref := p.Admit(c, now); ref == nil {
		t.Fatalf("double release freed two slots")
	}
	r2()
	r3()
}

func TestPolicyRate(t *testing.T) {
	p := NewPolicy("svc", Rules{Every: 30 * time.Second, Burst: 2, MaxConnections: 5})
	now := time.Now()
	c := tcpClient("127.0.0.1:1")
	for i := range 2 {
		if _, ref := p.Admit(c, now); ref != nil {
			t.Fatalf("connection %d in the burst refused: %v", i, ref)
		}
	}
	if _, ref := p.Admit(c, now); ref == nil || ref.Reason != ReasonRate {
		t.Fatalf("past the burst: %v, want rate_limited", ref)
	}
	if n := p.active.Load(); n != 2 {
		t.Errorf("a rate refusal kept a connection slot: %d active, want 2", n)
	}
	if _, ref := p.Admit(c, now.Add(31*time.Second)); ref != nil {
		t.Fatalf("after 30s (one token at 2 per minute): %v", ref)
	}
}

// testCA makes a CA and returns it with its key.
func testCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func testLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestPolicyClientCA(t *testing.T) {
	ca, caKey := testCA(t, "staff CA")
	other, otherKey := testCA(t, "other CA")
	path := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600)
	cas, err := tlsfiles.LoadCAFile(path, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPolicy("svc", Rules{ClientCA: cas})
	now := time.Now()
	tests := []struct {
		name  string
		chain []*x509.Certificate
		ok    bool
	}{
		{"signed by the CA", []*x509.Certificate{testLeaf(t, ca, caKey, "alice", x509.ExtKeyUsageClientAuth)}, true},
		{"none", nil, false},
		{"another CA", []*x509.Certificate{testLeaf(t, other, otherKey, "mallory", x509.ExtKeyUsageClientAuth)}, false},
		{"server certificate", []*x509.Certificate{testLeaf(t, ca, caKey, "web", x509.ExtKeyUsageServerAuth)}, false},
	}
	for _, tt := range tests {
		c := tcpClient("127.0.0.1:1")
		c.Certs = tt.chain
		_, ref := p.Admit(c, now)
		if tt.ok != (ref == nil) || ref != nil && ref.Reason != ReasonClientCert {
			t.Errorf("%s: refusal %v, want admitted=%v", tt.name, ref, tt.ok)
		}
	}
	if _, err := tlsfiles.LoadCAFile(filepath.Join(t.TempDir(), "none.pem"), slog.New(slog.DiscardHandler), time.Now); err == nil {
		t.Error("a missing client CA file was accepted")
	}
}

// A client CA file that changes is read again (checked at most once a
// second): a certificate from the new CA is admitted, one from the old no
// longer; a file that stops loading leaves the CAs before it in force.
func TestPolicyClientCAReloads(t *testing.T) {
	oldCA, oldKey := testCA(t, "old CA")
	newCA, newKey := testCA(t, "new CA")
	path := filepath.Join(t.TempDir(), "ca.pem")
	version := time.Now().Add(-time.Hour)
	write := func(b []byte) {
		t.Helper()
		// Each version gets its own modification time: writes in quick
		// succession may share one, and the two CA files their size.
		version = version.Add(time.Second)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, version, version); err != nil {
			t.Fatal(err)
		}
	}
	write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: oldCA.Raw}))
	clock := time.Now()
	now := func() time.Time { return clock }
	cas, err := tlsfiles.LoadCAFile(path, slog.New(slog.DiscardHandler), now)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPolicy("svc", Rules{ClientCA: cas})
	oldLeaf := testLeaf(t, oldCA, oldKey, "alice", x509.ExtKeyUsageClientAuth)
	newLeaf := testLeaf(t, newCA, newKey, "bob", x509.ExtKeyUsageClientAuth)
	admitted := func(leaf *x509.Certificate) bool {
		c := tcpClient("127.0.0.1:1")
		c.Certs = []*x509.Certificate{leaf}
		_, ref := p.Admit(c, time.Now())
		return ref == nil
	}
	if !admitted(oldLeaf) || admitted(newLeaf) {
		t.Fatal("before the change: want only the old CA's certificate admitted")
	}

	write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: newCA.Raw}))
	if !admitted(oldLeaf) {
		t.Error("the file was read again within a second of the last check")
	}
	clock = clock.Add(tlsfiles.CheckEvery)
	if admitted(oldLeaf) || !admitted(newLeaf) {
		t.Error("after the change: want only the new CA's certificate admitted")
	}

	write([]byte("not PEM at all"))
	clock = clock.Add(tlsfiles.CheckEvery)
	if !admitted(newLeaf) {
		t.Error("a broken file replaced the CAs in force")
	}
}

func TestParseClientNet(t *testing.T) {
	tests := map[string]string{
		"10.1.2.3/8":          "10.0.0.0/8",
		"192.0.2.7":           "192.0.2.7/32",
		"::ffff:192.0.2.7":    "192.0.2.7/32",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"2001:db8::1/32":      "2001:db8::/32",
	}
	for in, want := range tests {
		p, err := ParseClientNet(in)
		if err != nil || p != netip.MustParsePrefix(want) {
			t.Errorf("ParseClientNet(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/", "host.example.com", "10.0.0.0/40"} {
		if _, err := ParseClientNet(bad); err == nil {
			t.Errorf("ParseClientNet(%q) succeeded", bad)
		}
	}
}

// A reload that sets a cap counts the connections the previous rules let
// in: they hold slots under the new policy until they end.
func TestWithRulesKeepsLiveConnectionsCounted(t *testing.T) {
	old := NewPolicy("db", Rules{})
	now := time.Now()
	var releases []func()
	for range 2 {
		release, ref := old.Admit(tcpClient("192.0.2.1:1000"), now)
		if ref != nil {
			t.Fatal(ref)
		}
		releases = append(releases, release)
	}
	capped := old.WithRules(Rules{MaxConnections: 2})
	if _, ref := capped.Admit(tcpClient("192.0.2.1:1001"), now); ref == nil || ref.Reason != ReasonMaxConnections {
		t.Fatalf("a third connection under the new cap of 2, with 2 live from before: %v, want %s", ref, ReasonMaxConnections)
	}
	releases[0]()
	releases[0]() // a second call gives nothing back
	release, ref := capped.Admit(tcpClient("192.0.2.1:1002"), now)
	if ref != nil {
		t.Fatalf("after one of the old connections ended: %v", ref)
	}
	if _, ref := capped.Admit(tcpClient("192.0.2.1:1003"), now); ref == nil {
		t.Fatal("the cap let a third connection in")
	}
	release()
	releases[1]()
	if n := capped.active.Load(); n != 0 {
		t.Errorf("%d slots held after every connection ended", n)
	}
}
