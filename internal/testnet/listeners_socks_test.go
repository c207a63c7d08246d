package testnet_test

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/testnet"
	"golang.org/x/net/proxy"
)

func TestSOCKS5(t *testing.T) {
	echo := testnet.Echo(t)
	web := httpBackend(t)
	pwFile := filepath.Join(t.TempDir(), "alice.password")
	os.WriteFile(pwFile, []byte("s3cret\n"), 0o600)
	e := startListenerEdge(t, []config.Listener{
		{Kind: config.KindSOCKS5},
		{Kind: config.KindSOCKS5, Users: []config.SOCKSUser{{Name: "alice", PasswordFile: pwFile}}},
	}, map[string]config.EdgeService{
		"echo":   {},
		"web":    {},
		"gone":   {},
		"down":   {},
		"closed": {Policy: config.Policy{Deny: []string{"127.0.0.1"}}},
	})
	e.connect(t, map[string]string{"echo": echo.Addr(), "web": web, "closed": testnet.Echo(t).Addr(), "down": testnet.Refusing(t)}, nil)

	// Go's SOCKS5 client, no authentication: bytes both ways, half-close kept.
	d, err := proxy.SOCKS5("tcp", e.addr(0), nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", "echo:7")
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT echo: %v", err)
	}
	data := randomBytes(256<<10, 5)
	got := roundTrip(t, c.(*net.TCPConn), data)
	c.Close()
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Errorf("echo through SOCKS5: %d bytes back of %d, or altered", len(got), len(data))
	}

	// Refusals carry RFC 1928's reply codes.
	for _, tt := range []struct{ dst, want string }{
		{"nope:80", "host unreachable"},
		{"10.0.0.1:80", "connection not allowed by ruleset"},
		{"gone:80", "network unreachable"},
		{"closed:80", "connection not allowed by ruleset"},
		{"down:80", "connection refused"}, // the connector could not dial the back-end
	} {
		if c, err := d.Dial("tcp", tt.dst); err == nil || !strings.Contains(err.Error(), tt.want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("SOCKS5 CONNECT %s: err %v, want %q", tt.dst, err, tt.want)
		}
	}

	// An address instead of a service: served only because the connector's
	// allow-list holds it (as service echo), and nothing else is dialed.
	c, err = d.Dial("tcp", echo.Addr())
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT to the allowed address %s: %v", echo.Addr(), err)
	}
	if got := roundTrip(t, c.(*net.TCPConn), []byte("by address")); string(got) != "by address" {
		t.Errorf("echo by address: %q", got)
	}
	c.Close()
	before := echo.Accepted()
	if c, err := d.Dial("tcp", testnet.Refusing(t)); err == nil || !strings.Contains(err.Error(), "connection not allowed by ruleset") {
		if c != nil {
			c.Close()
		}
		t.Errorf("SOCKS5 CONNECT to an address no allow-list holds: %v", err)
	}
	if echo.Accepted() != before {
		t.Error("a refused address reached a back-end")
	}

	// curl, naming the service as the host; the port does not matter.
	out, err := curl(t, "--socks5-hostname", e.addr(0), "http://web:8080/via-socks")
	if err != nil || !strings.Contains(out, `"Path":"/via-socks"`) {
		t.Errorf("curl --socks5-hostname: %v: %s", err, out)
	}

	// Username and password (RFC 1929).
	out, err = curl(t, "-x", "socks5h://alice:s3cret@"+e.addr(1), "http://web/auth")
	if err != nil || !strings.Contains(out, `"Path":"/auth"`) {
		t.Errorf("curl with SOCKS5 credentials: %v: %s", err, out)
	}
	if out, err := curl(t, "-x", "socks5h://alice:wrong@"+e.addr(1), "http://web/"); err == nil {
		t.Errorf("curl with a wrong SOCKS5 password succeeded: %s", out)
	}
	bad, _ := proxy.SOCKS5("tcp", e.addr(1), &proxy.Auth{User: "mallory", Password: "s3cret"}, proxy.Direct)
	if c, err := bad.Dial("tcp", "echo:7"); err == nil {
		c.Close()
		t.Error("SOCKS5 with an unknown user succeeded")
	}
	noAuth, _ := proxy.SOCKS5("tcp", e.addr(1), nil, proxy.Direct)
	if c, err := noAuth.Dial("tcp", "echo:7"); err == nil {
		c.Close()
		t.Error("SOCKS5 without credentials got through a listener with users")
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, `client refused: SOCKS authentication failed for user \"mallory\"`)
	e.wantRefusals(t, map[string]int64{"address_not_allowed": 3, "no_connector": 1, "address_denied": 1, "socks_auth": 3, "connector": 1})
}

// proxyBackend starts a back-end that requires a PROXY protocol header and
// answers with the client address it read from it.
func proxyBackend(t *testing.T) string {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &proxyproto.Listener{Listener: raw, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				// Read the client's one byte before answering: closing
				// with it unread would make the kernel send a reset,
				// which can overtake the answer and discard it.
				first := make([]byte, 1)
				if _, err := io.ReadFull(c, first); err != nil {
					c.Write([]byte("no client byte after the header: " + err.Error() + "\n"))
					return
				}
				if first[0] != 'x' {
					c.Write([]byte(fmt.Sprintf("first client byte %q, want 'x'\n", first)))
					return
				}
				c.Write([]byte(c.RemoteAddr().String() + "\n"))
			})
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return raw.Addr().String()
}

func TestProxyProtocol(t *testing.T) {
	pp := proxyBackend(t)
	echo := testnet.Echo(t)
	e := startListenerEdge(t, nil, map[string]config.EdgeService{
		"pp1": {Listen: "127.0.0.1:0"}, "pp2": {Listen: "127.0.0.1:0"}, "off": {Listen: "127.0.0.1:0"},
	})
	e.connect(t, map[string]string{"pp1": pp, "pp2": pp, "off": echo.Addr()}, map[string]string{"pp1": config.ProxyV1, "pp2": config.ProxyV2})
	for _, svc := range []string{"pp1", "pp2"} {
		c, err := net.Dial("tcp", e.ServiceAddr(svc).String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x")) // the back-end answers once it has read the header and one byte
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if want := c.LocalAddr().String() + "\n"; err != nil || line != want {
			t.Errorf("%s: back-end saw client %q, %v; want %q", svc, line, err, want)
		}
	}
	// Off by default: the back-end's first bytes are the client's.
	got := roundTrip(t, dialTCP(t, e.ServiceAddr("off").String()), []byte("hello"))
	if string(got) != "hello" {
		t.Errorf("without proxy_protocol the back-end got and echoed %q, want %q", got, "hello")
	}
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// countingEcho starts an echo back-end that counts, in *got, the bytes
// its connections send.
func countingEcho(t *testing.T, got *atomic.Int64) *testnet.Backend {
	t.Helper()
	return testnet.Serve(t, func(c *net.TCPConn) {
		n, _ := io.Copy(c, c)
		got.Add(n)
		c.CloseWrite()
	})
}

// probeBackend dials b directly and waits for its echo of a probe. A
// listener accepts connections in the order they came, so every
// connection made to b before the probe has been accepted by then, and
// b.Accepted() counts it.
func probeBackend(t *testing.T, b *testnet.Backend) {
	t.Helper()
	if got := roundTrip(t, dialTCP(t, b.Addr()), []byte("probe")); string(got) != "probe" {
		t.Fatalf("probe of back-end %s: echoed %q", b.Addr(), got)
	}
}

// Played as an attacker: a SOCKS client that names a back-end's address
// is refused by the policy of the service that address belongs to before
// anything is dialed. The back-end sees no connection and no PROXY header
// from a denied client, nor from one over max_connections, and the
// client holding the slot keeps working. (The edge used to learn the
// service from a connector that had already dialed the back-end and
// written the PROXY header, and applied the policy only then.)
func TestSOCKSAddressPolicyBeforeAnyDial(t *testing.T) {
	var guardedBytes, limitedBytes atomic.Int64
	guarded, limited := countingEcho(t, &guardedBytes), countingEcho(t, &limitedBytes)
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindSOCKS5}}, map[string]config.EdgeService{
		"guarded": {Policy: config.Policy{Deny: []string{"127.0.0.0/8"}}},
		"limited": {Policy: config.Policy{MaxConnections: 1}},
	})
	e.connect(t, map[string]string{"guarded": guarded.Addr(), "limited": limited.Addr()},
		map[string]string{"guarded": config.ProxyV2, "limited": config.ProxyV1})
	d, err := proxy.SOCKS5("tcp", e.addr(0), nil, &net.Dialer{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	refused := func(address string) {
		t.Helper()
		c, err := d.Dial("tcp", address)
		if err == nil {
			c.Write([]byte("attack"))
			c.Close()
			t.Fatalf("SOCKS5 CONNECT %s succeeded; want refused by the policy", address)
		}
		if !strings.Contains(err.Error(), "connection not allowed by ruleset") {
			t.Fatalf("SOCKS5 CONNECT %s: %v; want connection not allowed by ruleset", address, err)
		}
	}

	// A denied client.
	refused(guarded.Addr())
	probeBackend(t, guarded)
	if n := guarded.Accepted(); n != 1 {
		t.Errorf("a denied client made the connector connect to the back-end %d times", n-1)
	}
	if n := guardedBytes.Load() - int64(len("probe")); n != 0 {
		t.Errorf("the back-end of a denied client received %d bytes (a PROXY header)", n)
	}

	// A client over max_connections, while another holds the one slot.
	holder, err := d.Dial("tcp", limited.Addr())
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT %s for the first client: %v", limited.Addr(), err)
	}
	defer holder.Close()
	// The back-end echoes the PROXY v1 line first, which says who the
	// client is.
	holder.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(holder, 108)).ReadString('\n')
	if want := fmt.Sprintf("PROXY TCP4 127.0.0.1 127.0.0.1 %d %s\r\n", holder.LocalAddr().(*net.TCPAddr).Port, portOf(limited.Addr())); err != nil || line != want {
		t.Fatalf("the slot holder's back-end got the PROXY line %q, %v; want %q", line, err, want)
	}
	holder.SetDeadline(time.Time{})
	refused(limited.Addr())
	probeBackend(t, limited)
	if n := limited.Accepted(); n != 2 {
		t.Errorf("the back-end accepted %d connections for one admitted client; a refused one reached it", n-1)
	}
	data := randomBytes(1<<20, 11)
	if got := roundTrip(t, holder.(*net.TCPConn), data); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Errorf("the slot holder got %d bytes back of %d, or altered", len(got), len(data))
	}
	e.wantRefusals(t, map[string]int64{"address_denied": 1, "max_connections": 1})
}

// portOf is the port of a host:port.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// A SOCKS client that names an allowed address is served as before the
// lookup came first: its bytes both ways intact, and a back-end with the
// PROXY protocol sees the client's own address.
func TestSOCKSAddressModeServes(t *testing.T) {
	echo := testnet.Echo(t)
	pp := proxyBackend(t)
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindSOCKS5}}, map[string]config.EdgeService{"echo": {}, "pp": {}})
	e.connect(t, map[string]string{"echo": echo.Addr(), "pp": pp}, map[string]string{"pp": config.ProxyV2})
	d, err := proxy.SOCKS5("tcp", e.addr(0), nil, &net.Dialer{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", echo.Addr())
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT %s: %v", echo.Addr(), err)
	}
	defer c.Close()
	data := randomBytes(4<<20, 12)
	if got := roundTrip(t, c.(*net.TCPConn), data); sha256.Sum256(got) != sha256.Sum256(data) {
		t.Errorf("echo by address: %d bytes back of %d, or altered", len(got), len(data))
	}
	if n := echo.Accepted(); n != 1 {
		t.Errorf("one client by address made %d back-end connections", n)
	}

	c, err = d.Dial("tcp", pp)
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT %s: %v", pp, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x")) // the back-end answers once it has read the header and one byte
	line, err := bufio.NewReader(c).ReadString('\n')
	if want := c.LocalAddr().String() + "\n"; err != nil || line != want {
		t.Errorf("by address, the PROXY v2 back-end saw client %q, %v; want %q", line, err, want)
	}
}

// TestSOCKSUnknownAddressesLogBounded: a client that floods the SOCKS
// listener with addresses no allow-list holds is refused each time, and
// the connector writes a few lines about it, not one per address it was
// asked (the addresses are the client's choice).
func TestSOCKSUnknownAddressesLogBounded(t *testing.T) {
	echo := testnet.Echo(t)
	e := startListenerEdge(t, []config.Listener{{Kind: config.KindSOCKS5}}, map[string]config.EdgeService{"echo": {}})
	logs := e.connect(t, map[string]string{"echo": echo.Addr()}, nil)
	d, err := proxy.SOCKS5("tcp", e.addr(0), nil, &net.Dialer{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const asked = 200
	for i := range asked {
		dst := fmt.Sprintf("198.18.%d.%d:9", i/250, 1+i%250)
		if c, err := d.Dial("tcp", dst); err == nil || !strings.Contains(err.Error(), "not allowed by ruleset") {
			if c != nil {
				c.Close()
			}
			t.Fatalf("SOCKS5 CONNECT %s: %v; want not allowed by ruleset", dst, err)
		}
	}
	if n := logs.Count("address lookup refused"); n < 1 || n > asked/10 {
		t.Fatalf("%d lines about %d refused lookups; want a few, at least one", n, asked)
	}
}
