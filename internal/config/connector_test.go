package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDecodeConnectorProblems(t *testing.T) {
	const ok = "data_dir: /d\nservices:\n  db:\n    address: 127.0.0.1:5432\n"
	tests := []struct {
		name, doc, want string
	}{
		{
			name: "unknown key in a service",
			doc:  "data_dir: /d\nservices:\n  db:\n    adress: 127.0.0.1:5432\n",
			want: "connector.yaml:4: services.db.adress: unknown key (known: address, dial_timeout, proxy_protocol)",
		},
		{
			name: "unknown key at top level",
			doc:  ok + "listen: :1\n",
			want: "connector.yaml:5: listen: unknown key (known: keyfile, data_dir, edges, tunnel, drain_timeout, log, health, metrics, services)",
		},
		{
			name: "metrics off loopback",
			doc:  ok + "metrics:\n  listen: 0.0.0.0:9464\n",
			want: `connector.yaml:6: metrics.listen: "0.0.0.0:9464" is not a loopback address; the connector listens on loopback only, unless metrics.allow_remote is true`,
		},
		{
			name: "metrics at a bad address",
			doc:  ok + "metrics:\n  listen: 9464\n",
			want: `connector.yaml:6: metrics.listen: invalid address "9464" (use host:port, e.g. :15432)`,
		},
		{
			name: "health probes off loopback",
			doc:  ok + "health:\n  listen: 0.0.0.0:5502\n",
			want: `connector.yaml:6: health.listen: "0.0.0.0:5502" is not a loopback address; the connector listens on loopback only, unless health.allow_remote is true`,
		},
		{
			name: "health probes at a bad address",
			doc:  ok + "health:\n  listen: 5502\n",
			want: `connector.yaml:6: health.listen: invalid address "5502" (use host:port, e.g. :15432)`,
		},
		{
			name: "proxy with another scheme",
			doc:  ok + "tunnel:\n  proxy: ftp://u:hunter2@proxy.example:21\n",
			want: `connector.yaml:6: tunnel.proxy: proxy ftp://u:xxxxx@proxy.example:21: the scheme must be http, socks5 or socks5h (or "direct" to ignore the environment)`,
		},
		{
			name: "proxy without a port",
			doc:  ok + "tunnel:\n  proxy: socks5h://proxy.example\n",
			want: `connector.yaml:6: tunnel.proxy: proxy socks5h://proxy.example: needs HOST:PORT, e.g. socks5h://proxy.example.com:1080 (or "direct" to ignore the environment)`,
		},
		{
			name: "bad duration in a service",
			doc:  "data_dir: /d\nservices:\n  db:\n    address: 127.0.0.1:5432\n    dial_timeout: soon\n",
			want: `connector.yaml:5: services.db.dial_timeout: invalid duration "soon" (use e.g. 15s)`,
		},
		{
			name: "back-end port 0",
			doc:  "data_dir: /d\nservices:\n  db:\n    address: 127.0.0.1:0\n",
			want: `connector.yaml:4: services.db.address: port 0 in "127.0.0.1:0" cannot be dialled (use 1-65535)`,
		},
		{
			name: "back-end port out of range",
			doc:  "data_dir: /d\nservices:\n  db:\n    address: db.internal:65536\n",
			want: `connector.yaml:4: services.db.address: port 65536 in "db.internal:65536" is out of range (use 1-65535)`,
		},
		{
			name: "back-end without host",
			doc:  "data_dir: /d\nservices:\n  db:\n    address: :5432\n",
			want: `connector.yaml:4: services.db.address: missing host in ":5432" (use host:port, e.g. 127.0.0.1:5432)`,
		},
		{
			name: "back-end host with a space",
			doc:  "data_dir: /d\nservices:\n  db:\n    address: db internal:5432\n",
			want: `connector.yaml:4: services.db.address: invalid host "db internal" in "db internal:5432" (use an IP address or a DNS name)`,
		},
		{
			name: "no services",
			doc:  "data_dir: /d\n",
			want: "connector.yaml: services: required: at least one service (the connector dials only the back-ends listed here)",
		},
		{
			name: "service without address",
			doc:  "data_dir: /d\nservices:\n  db:\n    dial_timeout: 1s\n",
			want: "connector.yaml:3: services.db.address: required: the back-end's host:port, e.g. 127.0.0.1:5432",
		},
		{
			name: "bad edge address",
			doc:  ok + "edges:\n  - edge.example.com:5500\n  - edge.example.com\n",
			want: `connector.yaml:7: edges[1]: invalid address "edge.example.com" (use host:port, e.g. 127.0.0.1:5432)`,
		},
		{
			name: "bad WebSocket edge address",
			doc:  ok + "edges:\n  - wss://edge.example.com/.sallyport/tunnel\n  - wss://edge.example.com:0/t\n",
			want: `connector.yaml:7: edges[1]: "wss://edge.example.com:0/t": the port must be a number from 1 to 65535`,
		},
		{
			name: "edges as a mapping",
			doc:  ok + "edges:\n  a: edge.example.com:5500\n",
			want: "connector.yaml:6: edges: expected a list, got a mapping",
		},
		{
			name: "backoff max below min",
			doc:  ok + "tunnel:\n  backoff_min: 2s\n  backoff_max: 1s\n",
			want: "connector.yaml:7: tunnel.backoff_max: must be at least backoff_min (got 1s, backoff_min 2s)",
		},
		{
			name: "keepalive timeout below default interval",
			doc:  ok + "tunnel:\n  keepalive_timeout: 2s\n",
			want: "connector.yaml:6: tunnel.keepalive_timeout: must be longer than keepalive_interval (got 2s, interval 5s)",
		},
		{
			name: "receive budget out of range",
			doc:  ok + "tunnel:\n  receive_budget_mib: 100000\n",
			want: "connector.yaml:6: tunnel.receive_budget_mib: must be 1 to 65536 (got 100000)",
		},
		{
			name: "every problem in one file, in file order",
			doc: "keyfile: k\n" +
				"tunnel:\n" +
				"  dial_timeout: -3s\n" +
				"services:\n" +
				"  DB:\n" +
				"    address: 127.0.0.1:99999\n" +
				"  db:\n" +
				"    address: 127.0.0.1:5432\n" +
				"  db:\n" +
				"    address: 127.0.0.1:5433\n",
			want: "connector.yaml: data_dir: required: the directory where the connector keeps its key and certificate\n" +
				"connector.yaml:3: tunnel.dial_timeout: must be greater than zero (got -3s)\n" +
				`connector.yaml:5: services.DB: invalid service name "DB" (use up to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)` + "\n" +
				`connector.yaml:6: services.DB.address: port 99999 in "127.0.0.1:99999" is out of range (use 1-65535)` + "\n" +
				"connector.yaml:9: services.db: duplicate key (first at line 7)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeConnector(strings.NewReader(tt.doc), "connector.yaml")
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v (%T), want Problems", err, err)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got: %s\nwant: %s", err, tt.want)
			}
			if n := strings.Count(tt.want, "\n") + 1; len(ps) != n {
				t.Errorf("got %d problems, want %d", len(ps), n)
			}
		})
	}
}

// metrics.listen is off by default, and may leave loopback only when the
// operator says so.
func TestConnectorMetricsListen(t *testing.T) {
	const ok = "data_dir: /d\nservices:\n  db:\n    address: 127.0.0.1:5432\n"
	c, err := DecodeConnector(strings.NewReader(ok), "connector.yaml")
	if err != nil || c.Metrics.Listen != "" {
		t.Fatalf("without metrics: listen %q, %v; want none", c.Metrics.Listen, err)
	}
	c, err = DecodeConnector(strings.NewReader(ok+"metrics:\n  listen: 0.0.0.0:9464\n  allow_remote: true\n"), "connector.yaml")
	if err != nil || c.Metrics.Listen != "0.0.0.0:9464" {
		t.Fatalf("metrics on every interface, allowed: listen %q, %v", c.Metrics.Listen, err)
	}
}

func TestLoadConnectorExample(t *testing.T) {
	got, err := LoadConnector(filepath.Join("testdata", "connector.yaml"))
	if err != nil {
		t.Fatalf("LoadConnector(testdata/connector.yaml): %v", err)
	}
	got.Origin = Origin{}
	want := Connector{
		Keyfile: "/etc/sallyport/connector.key",
		DataDir: "/var/lib/sallyport/connector",
		Edges:   []string{"edge.example.com:5500"},
		Tunnel: ConnectorTunnel{
			KeepaliveInterval: 5 * time.Second,
			KeepaliveTimeout:  15 * time.Second,
			DialTimeout:       10 * time.Second,
			BackoffMin:        250 * time.Millisecond,
			BackoffMax:        30 * time.Second,
			JoinSpread:        30 * time.Second,
			LeaveGrace:        30 * time.Second,
			Pool:              1,
			ReceiveBudgetMiB:  64,
		},
		DrainTimeout: 30 * time.Second,
		Log:          Log{Format: "text", Level: "info"},
		Services: map[string]ConnectorService{
			"db":   {Address: "127.0.0.1:5432", DialTimeout: 5 * time.Second},
			"ssh":  {Address: "bastion.internal:22", DialTimeout: 5 * time.Second},
			"wiki": {Address: "127.0.0.1:8080", DialTimeout: 5 * time.Second, ProxyProtocol: ProxyV2},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeConnectorMinimalGetsDefaults(t *testing.T) {
	got, err := DecodeConnector(strings.NewReader("data_dir: /d\nservices:\n  web.v2:\n    address: '[::1]:8080'\n    dial_timeout: 2s\n"), "c.yaml")
	if err != nil {
		t.Fatalf("DecodeConnector: %v", err)
	}
	got.Origin = Origin{}
	want := Connector{
		DataDir: "/d",
		Tunnel: ConnectorTunnel{
			KeepaliveInterval: DefaultKeepaliveInterval,
			KeepaliveTimeout:  DefaultKeepaliveTimeout,
			DialTimeout:       DefaultTunnelDialTimeout,
			BackoffMin:        DefaultBackoffMin,
			BackoffMax:        DefaultBackoffMax,
			JoinSpread:        DefaultJoinSpread,
			LeaveGrace:        DefaultLeaveGrace,
			Pool:              1,
			ReceiveBudgetMiB:  64,
		},
		DrainTimeout: DefaultDrainTimeout,
		Log:          Log{Format: "text", Level: "info"},
		Services:     map[string]ConnectorService{"web.v2": {Address: "[::1]:8080", DialTimeout: 2 * time.Second}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", got, want)
	}
}

func TestConnectorFromFlags(t *testing.T) {
	c := Connector{DataDir: "/d"}
	c.Origin.SetFlag("data_dir", "--data-dir")
	name, svc, err := ParseService("db=127.0.0.1:5432")
	if err != nil {
		t.Fatalf("ParseService: %v", err)
	}
	c.Services = map[string]ConnectorService{name: svc}
	c.Origin.SetFlag("services."+name, "--service")
	c.Tunnel.BackoffMax = time.Millisecond
	c.ApplyDefaults()
	want := "tunnel.backoff_max: must be at least backoff_min (got 1ms, backoff_min 250ms)"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate:\n got: %v\nwant: %s", err, want)
	}
	if c.Services["db"].DialTimeout != DefaultServiceDial {
		t.Errorf("service dial timeout = %v, want the default %v", c.Services["db"].DialTimeout, DefaultServiceDial)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		flag, value, wantName, wantAddr, wantErr string
	}{
		{"--expose", "db=:15432", "db", ":15432", ""},
		{"--expose", "web=0.0.0.0:0", "web", "0.0.0.0:0", ""},
		{"--expose", "ssh=[::1]:2222", "ssh", "[::1]:2222", ""},
		{"--expose", "db", "", "", `flag --expose: wants NAME=ADDRESS, e.g. db=:15432 (got "db")`},
		{"--expose", "=:15432", "", "", `flag --expose: wants NAME=ADDRESS, e.g. db=:15432 (got "=:15432")`},
		{"--expose", "db=", "", "", `flag --expose: wants NAME=ADDRESS, e.g. db=:15432 (got "db=")`},
		{"--expose", "DB=:15432", "", "", `flag --expose: "DB=:15432": invalid service name "DB" (use up to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)`},
		{"--expose", "db=:99999", "", "", `flag --expose: "db=:99999": port 99999 in ":99999" is out of range (use 1-65535, or 0 to pick a free port)`},
		{"--expose", "db=15432", "", "", `flag --expose: "db=15432": invalid address "15432" (use host:port, e.g. :15432)`},
		{"--service", "db=127.0.0.1:5432", "db", "127.0.0.1:5432", ""},
		{"--service", "db=db.internal:5432=x", "", "", `flag --service: "db=db.internal:5432=x": invalid port "5432=x" in "db.internal:5432=x" (use a number 1-65535)`},
		{"--service", "db=:5432", "", "", `flag --service: "db=:5432": missing host in ":5432" (use host:port, e.g. 127.0.0.1:5432)`},
		{"--service", "db:5432", "", "", `flag --service: wants NAME=ADDRESS, e.g. db=127.0.0.1:5432 (got "db:5432")`},
		{"--service", "-db=h:1", "", "", `flag --service: "-db=h:1": invalid service name "-db" (use up to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)`},
	}
	for _, tt := range tests {
		var name, addr string
		var err error
		if tt.flag == "--expose" {
			var s EdgeService
			name, s, err = ParseExpose(tt.value)
			addr = s.Listen
		} else {
			var s ConnectorService
			name, s, err = ParseService(tt.value)
			addr = s.Address
		}
		if tt.wantErr == "" {
			if err != nil || name != tt.wantName || addr != tt.wantAddr {
				t.Errorf("%s %s = %q, %q, %v; want %q, %q", tt.flag, tt.value, name, addr, err, tt.wantName, tt.wantAddr)
			}
			continue
		}
		if err == nil || err.Error() != tt.wantErr || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s %s: err = %v\nwant %s", tt.flag, tt.value, err, tt.wantErr)
		}
	}
}

func TestServiceNameLength(t *testing.T) {
	long := strings.Repeat("a", 63)
	if _, _, err := ParseService(long + "=h:1"); err != nil {
		t.Errorf("63-character name refused: %v", err)
	}
	if _, _, err := ParseService(long + "a=h:1"); err == nil {
		t.Errorf("64-character name accepted")
	}
}

func TestConnectorMaxEdgesBounds(t *testing.T) {
	for _, tt := range []struct {
		doc  string
		want string
	}{
		{"tunnel:\n  max_edges: -1\n", "tunnel.max_edges: must be 0 (every edge) to 64 (got -1)"},
		{"tunnel:\n  max_edges: 65\n", "tunnel.max_edges: must be 0 (every edge) to 64 (got 65)"},
	} {
		c, err := DecodeConnector(strings.NewReader("data_dir: /d\nservices:\n  db: 127.0.0.1:5432\n"+tt.doc), "connector.yaml")
		if err == nil {
			c.ApplyDefaults()
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want one with %q", tt.doc, err, tt.want)
		}
	}
}
