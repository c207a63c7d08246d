package config

import (
	"strings"
	"testing"
	"time"
)

func TestListenersProblems(t *testing.T) {
	const head = "data_dir: /d\n"
	tests := []edgeErrorCase{
		{
			name: "unknown listener key",
			doc:  head + "listeners:\n  - kind: http\n    listen: :80\n    port: 80\n",
			want: "edge.yaml:5: listeners[0].port: unknown key (known: kind, listen, certificates, edge_hosts, ws_origins, forwarded_headers, strip_headers, client_ca, users)",
		},
		{
			name: "strip_headers: a bad name, and on a tls listener",
			doc:  head + "listeners:\n  - kind: http\n    listen: :80\n    strip_headers: [X-Ok, \"Bad Name\"]\n  - kind: tls\n    listen: :443\n    strip_headers: [X-Ok]\n",
			want: `edge.yaml:5: listeners[0].strip_headers[1]: invalid header name "Bad Name" (letters, digits and -, such as X-Internal-User)` + "\n" +
				"edge.yaml:8: listeners[1].strip_headers: only for http and https listeners (this one is tls)",
		},
		{
			name: "require_session: a bad value, and beside a listen port",
			doc: head + "listeners:\n  - kind: https\n    listen: :443\n    certificates: [{cert: a, key: b}]\n    edge_hosts: [edge.example.com]\n" +
				"services:\n  logs:\n    policy:\n      require_session: maybe\n  db:\n    listen: :5432\n    policy:\n      require_session: true\n",
			want: "edge.yaml:10: services.logs.policy.require_session: expected true or false, got \"maybe\"\n" +
				"edge.yaml:14: services.db.policy.require_session: a service that requires a session is reached only through session links (WebSocket on an edge host, or a cookie on its own hosts); remove this service's listen and sni, or require_session",
		},
		{
			name: "unknown kind",
			doc:  head + "listeners:\n  - kind: ftp\n    listen: :21\n",
			want: `edge.yaml:3: listeners[0].kind: unknown kind "ftp" (use http, https, tls or socks5)`,
		},
		{
			name: "missing kind and listen",
			doc:  head + "listeners:\n  - {}\n",
			want: "edge.yaml:3: listeners[0].kind: required: http, https, tls or socks5\n" +
				"edge.yaml:3: listeners[0].listen: required: a listen address such as :5500",
		},
		{
			name: "https without certificates",
			doc:  head + "listeners:\n  - kind: https\n    listen: :443\n",
			want: "edge.yaml:3: listeners[0].certificates: required: at least one {cert, key} pair of PEM files",
		},
		{
			name: "certificate without key",
			doc:  head + "listeners:\n  - kind: https\n    listen: :443\n    certificates:\n      - cert: a.crt\n",
			want: "edge.yaml:6: listeners[0].certificates[0].key: required: the private key's PEM file",
		},
		{
			name: "keys of another kind",
			doc: head + "listeners:\n  - kind: tls\n    listen: :443\n    certificates: [{cert: a, key: b}]\n" +
				"    edge_hosts: [e.example.com]\n    users: [{name: a, password_file: p}]\n    client_ca: ca.pem\n    forwarded_headers: false\n",
			want: "edge.yaml:5: listeners[0].certificates: only for https listeners (this one is tls)\n" +
				"edge.yaml:6: listeners[0].edge_hosts: only for http and https listeners (this one is tls)\n" +
				"edge.yaml:7: listeners[0].users: only for socks5 listeners (this one is tls)\n" +
				"edge.yaml:8: listeners[0].client_ca: only for https listeners (this one is tls)\n" +
				"edge.yaml:9: listeners[0].forwarded_headers: only for http and https listeners (this one is tls)",
		},
		{
			name: "listener on a service's port",
			doc:  head + "listeners:\n  - kind: http\n    listen: :8080\nservices:\n  db:\n    listen: 127.0.0.1:8080\n",
			want: `edge.yaml:7: services.db.listen: address "127.0.0.1:8080" is already used by listeners[0].listen (":8080")`,
		},
		{
			name: "socks user without a password file",
			doc:  head + "listeners:\n  - kind: socks5\n    listen: :1080\n    users:\n      - name: alice\n        password: hunter2\n",
			want: "edge.yaml:6: listeners[0].users[0].password_file: required: a file holding the password (passwords are never written in the config)\n" +
				"edge.yaml:7: listeners[0].users[0].password: unknown key (known: name, password_file)",
		},
		{
			name: "duplicate socks user",
			doc:  head + "listeners:\n  - kind: socks5\n    listen: :1080\n    users:\n      - {name: a, password_file: p}\n      - {name: a, password_file: q}\n",
			want: `edge.yaml:7: listeners[0].users[1].name: duplicate user "a"`,
		},
		{
			name: "ws origins without edge hosts",
			doc:  head + "listeners:\n  - kind: http\n    listen: :80\n    ws_origins: [app.example.com]\n",
			want: "edge.yaml:5: listeners[0].ws_origins: has no effect without edge_hosts (the names WebSockets are served on)",
		},
		{
			name: "bad host names",
			doc:  head + "listeners:\n  - kind: http\n    listen: :80\nservices:\n  web:\n    hosts: [\"a.*.example.com\", \"web:80\", \"\"]\n",
			want: `edge.yaml:7: services.web.hosts[0]: invalid host name "a.*.example.com" (use a DNS name such as app.example.com, or *.example.com for every name one label below it)` + "\n" +
				`edge.yaml:7: services.web.hosts[1]: invalid host name "web:80" (use a DNS name such as app.example.com, or *.example.com for every name one label below it)` + "\n" +
				`edge.yaml:7: services.web.hosts[2]: invalid host name "" (use a DNS name such as app.example.com, or *.example.com for every name one label below it)`,
		},
		{
			name: "host routed twice",
			doc:  head + "listeners:\n  - kind: http\n    listen: :80\nservices:\n  a:\n    hosts: [x.example.com]\n  b:\n    hosts: [X.example.com]\n",
			want: `edge.yaml:9: services.b.hosts[0]: "X.example.com" is already routed by services.a.hosts[0]`,
		},
		{
			name: "edge host twice on one listener",
			doc:  head + "listeners:\n  - kind: http\n    listen: :80\n    edge_hosts: [edge.example.com, EDGE.example.com]\n",
			want: `edge.yaml:5: listeners[0].edge_hosts[1]: "EDGE.example.com" is already routed by listeners[0].edge_hosts[0]`,
		},
		{
			name: "edge host shadows a service",
			doc:  head + "listeners:\n  - kind: http\n    listen: :80\n    edge_hosts: [edge.example.com]\nservices:\n  a:\n    hosts: [edge.example.com]\n",
			want: `edge.yaml:8: services.a.hosts[0]: "edge.example.com" is already routed by listeners[0].edge_hosts[0]`,
		},
		{
			name: "hosts without an http listener",
			doc:  head + "listeners:\n  - kind: tls\n    listen: :443\nservices:\n  a:\n    hosts: [a.example.com]\n",
			want: "edge.yaml:7: services.a.hosts: no http or https listener serves these hosts (add one under listeners)",
		},
		{
			name: "sni without a tls listener",
			doc:  head + "services:\n  a:\n    listen: :1\n    sni: [a.example.com]\n",
			want: "edge.yaml:5: services.a.sni: no tls listener serves these names (add one with kind: tls under listeners)",
		},
		{
			name: "service with no way in",
			doc:  head + "listeners:\n  - kind: https\n    listen: :443\n    certificates: [{cert: a, key: b}]\nservices:\n  a:\n    policy: {max_connections: 1}\n",
			want: "edge.yaml:7: services.a.listen: required: the public address clients connect to, e.g. :15432",
		},
		{
			name: "bad policy values",
			doc: head + "services:\n  a:\n    listen: :1\n    policy:\n      allow: [10.0.0.0/33, 10.0.0.1]\n      deny: [nowhere]\n" +
				"      max_connections: -1\n      rate: {connections: -2, per: -1s, burst: -3}\n",
			want: `edge.yaml:6: services.a.policy.allow[0]: invalid network "10.0.0.0/33" (use a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or one address)` + "\n" +
				`edge.yaml:7: services.a.policy.deny[0]: invalid network "nowhere" (use a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or one address)` + "\n" +
				"edge.yaml:8: services.a.policy.max_connections: must not be negative (got -1; 0 means no cap)\n" +
				"edge.yaml:9: services.a.policy.rate.connections: must not be negative (got -2; 0 means no limit)\n" +
				"edge.yaml:9: services.a.policy.rate.per: must not be negative (got -1s)\n" +
				"edge.yaml:9: services.a.policy.rate.burst: must not be negative (got -3)",
		},
		{
			name: "rate without connections",
			doc:  head + "services:\n  a:\n    listen: :1\n    policy:\n      rate: {per: 1m}\n",
			want: "edge.yaml:6: services.a.policy.rate.connections: required: how many new connections are let in per period",
		},
		{
			name: "rate per is a duration",
			doc:  head + "services:\n  a:\n    listen: :1\n    policy:\n      rate: {connections: 1, per: 60}\n",
			want: `edge.yaml:6: services.a.policy.rate.per: invalid duration "60" (use e.g. 15s)`,
		},
		{
			name: "client ca on a tcp service",
			doc:  head + "services:\n  a:\n    listen: :1\n    policy:\n      client_ca: ca.pem\n",
			want: "edge.yaml:6: services.a.policy.client_ca: the edge sees client certificates on https listeners only; remove this service's listen and sni, or the client_ca",
		},
	}
	checkEdgeErrors(t, tests)
}

func TestListenersAccepted(t *testing.T) {
	doc := "data_dir: /d\nlisteners:\n  - kind: socks5\n    listen: 127.0.0.1:0\n  - kind: http\n    listen: :0\n    edge_hosts: ['*.edge.example.com']\n" +
		"    forwarded_headers: false\n  - kind: https\n    listen: :0\n    edge_hosts: ['*.edge.example.com']\n    certificates: [{cert: c, key: k}]\n" +
		"services:\n  a: {}\n  b:\n    hosts: [b.example.com, '*.b.example.com']\n"
	e, err := DecodeEdge(strings.NewReader(doc), "edge.yaml")
	if err != nil {
		t.Fatalf("DecodeEdge: %v", err)
	}
	if e.Listeners[1].ForwardHeaders() || !e.Listeners[0].ForwardHeaders() {
		t.Errorf("ForwardHeaders: http %v, socks5 %v; want false (set), true (default)", e.Listeners[1].ForwardHeaders(), e.Listeners[0].ForwardHeaders())
	}
}

func TestRateInterval(t *testing.T) {
	tests := []struct {
		r     Rate
		every time.Duration
		burst int
	}{
		{Rate{}, 0, 0},
		{Rate{Connections: 10}, 100 * time.Millisecond, 10},
		{Rate{Connections: 5, Per: time.Minute, Burst: 1}, 12 * time.Second, 1},
	}
	for _, tt := range tests {
		every, burst := tt.r.Interval()
		if every != tt.every || burst != tt.burst {
			t.Errorf("%+v.Interval() = %s, %d; want %s, %d", tt.r, every, burst, tt.every, tt.burst)
		}
	}
}

func TestConnectorProxyProtocol(t *testing.T) {
	_, err := DecodeConnector(strings.NewReader("data_dir: /d\nservices:\n  a:\n    address: 127.0.0.1:1\n    proxy_protocol: v3\n"), "c.yaml")
	want := `c.yaml:5: services.a.proxy_protocol: unknown PROXY protocol version "v3" (use v1 or v2, or leave it out to send none)`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}
