package egress

import (
	"context"
	"strings"
	"testing"
	"time"
)

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// TestFromEnv: HTTPS_PROXY wins over ALL_PROXY, lower case is read too, a
// bare host:port is an HTTP proxy, and NO_PROXY names what goes direct.
func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   map[string]string
		addr  string
		proxy string // "" for direct
	}{
		{"none", nil, "edge.example.com:5500", ""},
		{"HTTPS_PROXY", map[string]string{"HTTPS_PROXY": "http://p:3128", "ALL_PROXY": "socks5://s:1080"}, "edge.example.com:5500", "http://p:3128"},
		{"https_proxy", map[string]string{"https_proxy": "http://p:3128"}, "edge.example.com:5500", "http://p:3128"},
		{"ALL_PROXY", map[string]string{"ALL_PROXY": "socks5h://u:pw@s:1080"}, "edge.example.com:5500", "socks5h://u:pw@s:1080"},
		{"all_proxy", map[string]string{"all_proxy": "socks5://s:1080"}, "edge.example.com:5500", "socks5://s:1080"},
		{"no scheme", map[string]string{"HTTPS_PROXY": "p:3128"}, "edge.example.com:5500", "http://p:3128"},
		{"NO_PROXY domain", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".internal,other.test"}, "edge.internal:5500", ""},
		{"NO_PROXY other", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".internal"}, "edge.example.com:5500", "http://p:3128"},
		{"NO_PROXY CIDR", map[string]string{"HTTPS_PROXY": "http://p:3128", "no_proxy": "198.18.0.0/15"}, "198.18.2.1:5500", ""},
		{"NO_PROXY port", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "edge.example.com:443"}, "edge.example.com:5500", "http://p:3128"},
		{"NO_PROXY star", map[string]string{"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, "edge.example.com:5500", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := FromEnv(func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			p, err := d.ProxyFor(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if p != nil {
				got = p.String()
			}
			if got != tc.proxy {
				t.Errorf("proxy for %s = %q, want %q", tc.addr, got, tc.proxy)
			}
		})
	}
}

// TestParseProxy: the URL forms accepted, and errors that never show the
// password.
func TestParseProxy(t *testing.T) {
	for _, ok := range []string{"http://p:3128", "http://u:p@p:3128", "socks5://p:1080", "socks5h://u:p@[::1]:1080", "http://p:3128/"} {
		if _, err := ParseProxy(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"ftp://u:hunter2@p:21":      "scheme must be http, socks5 or socks5h",
		"https://u:hunter2@p:443":   "not supported",
		"http://u:hunter2@p":        "needs HOST:PORT",
		"http://u:hunter2@p:1/path": "no path",
		"http://u:hunter2@p:1\x7f":  "does not parse",
	} {
		_, err := ParseProxy(in)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: err = %v, want one saying %q without the password", in, err, want)
		}
	}
	if _, err := FromEnv(func(k string) string { return map[string]string{"ALL_PROXY": "gopher://u:hunter2@x:1"}[k] }); err == nil ||
		!strings.Contains(err.Error(), "ALL_PROXY") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad ALL_PROXY: err = %v", err)
	}
	d := &Dialer{Proxy: mustURL(t, "http://u:hunter2@p:3128")}
	if s := d.String(); strings.Contains(s, "hunter2") || !strings.Contains(s, "p:3128") {
		t.Errorf("String() = %q", s)
	}
}
