package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// decodeEdgeErr decodes doc as "edge.yaml" and returns the error text, failing
// the test if there is no error or it is not a Problems.
// edgeErrorCase is an edge config doc and the error it must get, whole.
type edgeErrorCase struct{ name, doc, want string }

// checkEdgeErrors decodes each case's doc and checks its error, and that
// it counts one problem per line.
func checkEdgeErrors(t *testing.T, tests []edgeErrorCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ps := decodeEdgeErr(t, tt.doc)
			if got != tt.want {
				t.Errorf("error:\n got: %s\nwant: %s", got, tt.want)
			}
			if n := strings.Count(tt.want, "\n") + 1; len(ps) != n {
				t.Errorf("got %d problems, want %d", len(ps), n)
			}
		})
	}
}

func decodeEdgeErr(t *testing.T, doc string) (string, Problems) {
	t.Helper()
	_, err := DecodeEdge(strings.NewReader(doc), "edge.yaml")
	if err == nil {
		t.Fatalf("DecodeEdge accepted:\n%s", doc)
	}
	var ps Problems
	if !errors.As(err, &ps) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v (%T) is not a Problems matching ErrInvalid", err, err)
	}
	return err.Error(), ps
}

func TestDecodeEdgeProblems(t *testing.T) {
	tests := []edgeErrorCase{
		{
			name: "unknown top-level key",
			doc:  "data_dir: /d\nlisten: :5500\n",
			want: "edge.yaml:2: listen: unknown key (known: data_dir, tunnel, admin, drain_timeout, log, audit, store, cluster, limits, connector_certificate_ttl, listeners, services)",
		},
		{
			name: "unknown key in a service",
			doc:  "data_dir: /d\nservices:\n  db:\n    listn: :15432\n",
			want: "edge.yaml:4: services.db.listn: unknown key (known: listen, hosts, sni, policy)",
		},
		{
			name: "bad duration",
			doc:  "data_dir: /d\ntunnel:\n  keepalive_interval: 5x\n",
			want: `edge.yaml:3: tunnel.keepalive_interval: invalid duration "5x" (use e.g. 15s)`,
		},
		{
			name: "duration without a unit",
			doc:  "data_dir: /d\ndrain_timeout: 30\n",
			want: `edge.yaml:2: drain_timeout: invalid duration "30" (use e.g. 15s)`,
		},
		{
			name: "port out of range",
			doc:  "data_dir: /d\nservices:\n  db:\n    listen: :70000\n",
			want: `edge.yaml:4: services.db.listen: port 70000 in ":70000" is out of range (use 1-65535, or 0 to pick a free port)`,
		},
		{
			name: "port not a number",
			doc:  "data_dir: /d\ntunnel:\n  listen: 0.0.0.0:tunnel\n",
			want: `edge.yaml:3: tunnel.listen: invalid port "tunnel" in "0.0.0.0:tunnel" (use a number 1-65535)`,
		},
		{
			name: "address without a port",
			doc:  "data_dir: /d\nservices:\n  db:\n    listen: 15432\n",
			want: `edge.yaml:4: services.db.listen: invalid address "15432" (use host:port, e.g. :15432)`,
		},
		{
			name: "advertise needs a host",
			doc:  "data_dir: /d\ntunnel:\n  advertise: [edge.example.com:5500, \":5500\"]\n",
			want: `edge.yaml:3: tunnel.advertise[1]: missing host in ":5500" (use host:port, e.g. 127.0.0.1:5432)`,
		},
		{
			name: "list where a mapping goes",
			doc:  "data_dir: /d\nservices:\n  - db\n",
			want: "edge.yaml:3: services: expected a mapping of service names, got a list",
		},
		{
			name: "string where a list goes",
			doc:  "data_dir: /d\ntunnel:\n  advertise: edge.example.com:5500\n",
			want: `edge.yaml:3: tunnel.advertise: expected a list, got "edge.example.com:5500" (write a one-item list as [edge.example.com:5500])`,
		},
		{
			name: "mapping where a string goes",
			doc:  "data_dir:\n  path: /d\n",
			want: "edge.yaml:2: data_dir: expected a string, got a mapping",
		},
		{
			name: "yes is not a boolean",
			doc:  "data_dir: /d\nadmin:\n  allow_remote: yes\n",
			want: `edge.yaml:3: admin.allow_remote: expected true or false, got "yes"`,
		},
		{
			name: "duplicate key",
			doc:  "data_dir: /d\nservices:\n  db:\n    listen: :1\n  db:\n    listen: :2\n",
			want: "edge.yaml:5: services.db: duplicate key (first at line 3)",
		},
		{
			name: "two problems reported together in file order",
			doc:  "data_dir: /d\ntunnel:\n  keepalive_interval: 5x\nservices:\n  db:\n    listn: :15432\n",
			want: "edge.yaml:3: tunnel.keepalive_interval: invalid duration \"5x\" (use e.g. 15s)\n" +
				"edge.yaml:6: services.db.listn: unknown key (known: listen, hosts, sni, policy)",
		},
		{
			name: "decode and semantic problems reported together in file order",
			doc:  "data_dir: /d\nlog:\n  level: loud\nservices:\n  db:\n    listen: :1\n    port: 2\n",
			want: "edge.yaml:3: log.level: unknown level \"loud\" (use debug, info, warn or error)\n" +
				"edge.yaml:7: services.db.port: unknown key (known: listen, hosts, sni, policy)",
		},
		{
			name: "missing data_dir",
			doc:  "services:\n  db:\n    listen: :15432\n",
			want: "edge.yaml: data_dir: required: the directory where the edge keeps its CA, certificates and state",
		},
		{
			name: "misspelt data_dir is reported once",
			doc:  "datadir: /d\n",
			want: "edge.yaml:1: datadir: unknown key (known: data_dir, tunnel, admin, drain_timeout, log, audit, store, cluster, limits, connector_certificate_ttl, listeners, services)",
		},
		{
			name: "unrelated unknown key does not hide a missing one",
			doc:  "colour: blue\n",
			want: "edge.yaml: data_dir: required: the directory where the edge keeps its CA, certificates and state\n" +
				"edge.yaml:1: colour: unknown key (known: data_dir, tunnel, admin, drain_timeout, log, audit, store, cluster, limits, connector_certificate_ttl, listeners, services)",
		},
		{
			name: "service without listen",
			doc:  "data_dir: /d\nservices:\n  db: {}\n",
			want: "edge.yaml:3: services.db.listen: required: the public address clients connect to, e.g. :15432",
		},
		{
			name: "invalid service name",
			doc:  "data_dir: /d\nservices:\n  Db:\n    listen: :15432\n",
			want: `edge.yaml:3: services.Db: invalid service name "Db" (use up to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)`,
		},
		{
			name: "two services on one address",
			doc:  "data_dir: /d\nservices:\n  db:\n    listen: :8080\n  web:\n    listen: 127.0.0.1:8080\n",
			want: `edge.yaml:6: services.web.listen: address "127.0.0.1:8080" is already used by services.db.listen (":8080")`,
		},
		{
			name: "service on the tunnel port",
			doc:  "data_dir: /d\nservices:\n  db:\n    listen: :5500\n",
			want: `edge.yaml:4: services.db.listen: address ":5500" is already used by tunnel.listen (":5500")`,
		},
		{
			name: "keepalive timeout not above interval",
			doc:  "data_dir: /d\ntunnel:\n  keepalive_interval: 20s\n  keepalive_timeout: 20s\n",
			want: "edge.yaml:4: tunnel.keepalive_timeout: must be longer than keepalive_interval (got 20s, interval 20s)",
		},
		{
			name: "receive budget out of range",
			doc:  "data_dir: /d\ntunnel:\n  receive_budget_mib: -1\n",
			want: "edge.yaml:3: tunnel.receive_budget_mib: must be 1 to 65536 (got -1)",
		},
		{
			name: "openings per source above the bound in all",
			doc:  "data_dir: /d\ntunnel:\n  openings_per_source: 5000\n",
			want: "edge.yaml:3: tunnel.openings_per_source: must be 1 to 1024, the openings the edge holds in all (got 5000)",
		},
		{
			name: "negative duration",
			doc:  "data_dir: /d\ndrain_timeout: -1s\n",
			want: "edge.yaml:2: drain_timeout: must be greater than zero (got -1s)",
		},
		{
			name: "admin off loopback",
			doc:  "data_dir: /d\nadmin:\n  listen: 0.0.0.0:5501\n",
			want: `edge.yaml:3: admin.listen: "0.0.0.0:5501" is not a loopback address; the admin API stays on loopback unless admin.allow_remote is true`,
		},
		{
			name: "health listener at a bad address",
			doc:  "data_dir: /d\nadmin:\n  health_listen: 5502\n",
			want: `edge.yaml:3: admin.health_listen: invalid address "5502" (use host:port, e.g. :15432)`,
		},
		{
			name: "bad log format",
			doc:  "data_dir: /d\nlog:\n  format: xml\n",
			want: `edge.yaml:3: log.format: unknown format "xml" (use text or json)`,
		},
		{
			name: "alias",
			doc:  "data_dir: &d /d\nservices:\n  db:\n    listen: *d\n",
			want: "edge.yaml:4: services.db.listen: YAML aliases (*d) are not supported; write the value out",
		},
		{
			name: "merge key",
			doc:  "data_dir: /d\nservices:\n  db:\n    <<: {listen: \":1\"}\n",
			want: "edge.yaml:4: services.db.<<: merge keys (<<) are not supported; write the keys out",
		},
		{
			name: "custom tag",
			doc:  "data_dir: !secret /d\n",
			want: "edge.yaml:1: data_dir: unsupported YAML tag !secret; write a plain value",
		},
		{
			name: "two documents",
			doc:  "data_dir: /d\n---\ndata_dir: /e\n",
			want: "edge.yaml:2: a second YAML document; a config file holds one (remove the '---' line and what follows, or merge it into the first)",
		},
		{
			name: "syntax error",
			doc:  "data_dir: /d\ntunnel:\n  listen: :1\n listen: :2\n",
			want: "edge.yaml:4: invalid YAML: did not find expected key",
		},
		{
			name: "tab indentation",
			doc:  "data_dir: /d\ntunnel:\n\tlisten: :1\n",
			want: "edge.yaml:3: invalid YAML: found character that cannot start any token (a tab in the indentation: YAML indents with spaces only)",
		},
		{
			name: "top level is a list",
			doc:  "- data_dir: /d\n",
			want: "edge.yaml:1: expected a mapping of keys at the top level, got a list",
		},
		{
			name: "too large",
			doc:  "data_dir: /d\n" + strings.Repeat("# padding\n", MaxFileSize/10),
			want: "edge.yaml: larger than 1024 KiB; a config file is a few kilobytes (is this the right file?)",
		},
	}
	checkEdgeErrors(t, tests)
}

func TestProblemsFields(t *testing.T) {
	_, ps := decodeEdgeErr(t, "data_dir: /d\ntunnel:\n  keepalive_interval: 5x\nservices:\n  db:\n    listn: :1\n")
	want := Problems{
		{File: "edge.yaml", Line: 3, Key: "tunnel.keepalive_interval", Msg: `invalid duration "5x" (use e.g. 15s)`},
		{File: "edge.yaml", Line: 6, Key: "services.db.listn", Msg: "unknown key (known: listen, hosts, sni, policy)"},
	}
	if !reflect.DeepEqual(ps, want) {
		t.Errorf("problems:\n got %#v\nwant %#v", ps, want)
	}
	var first Problem
	if !errors.As(error(ps), &first) || first.Line != 3 {
		t.Errorf("errors.As found %#v, want the first problem", first)
	}
}

func TestLoadEdgeExample(t *testing.T) {
	got, err := LoadEdge(filepath.Join("testdata", "edge.yaml"))
	if err != nil {
		t.Fatalf("LoadEdge(testdata/edge.yaml): %v", err)
	}
	if l := got.Origin.Line("services.db.listen"); l == 0 {
		t.Errorf("no line recorded for services.db.listen")
	}
	got.Origin = Origin{}
	yes := true
	want := Edge{
		DataDir: "/var/lib/sallyport/edge",
		Tunnel: EdgeTunnel{
			Listen:            ":5500",
			Advertise:         []string{"edge.example.com:5500"},
			KeepaliveInterval: 5 * time.Second,
			KeepaliveTimeout:  15 * time.Second,
			AnswerTimeout:     15 * time.Second,
			ReceiveBudgetMiB:  64,
			OpeningsPerSource: 32,
		},
		Admin:                   Admin{Listen: "127.0.0.1:5501"},
		DrainTimeout:            30 * time.Second,
		Log:                     Log{Format: "text", Level: "info"},
		Audit:                   Audit{Retention: 90 * 24 * time.Hour},
		Limits:                  Limits{MaxClients: 4096, MaxClientsPerSource: 256},
		ConnectorCertificateTTL: 7 * 24 * time.Hour,
		Listeners: []Listener{
			{
				Kind: KindHTTPS, Listen: ":443",
				Certificates:     []CertificateFiles{{Cert: "/etc/sallyport/tls/example.com.crt", Key: "/etc/sallyport/tls/example.com.key"}},
				EdgeHosts:        []string{"edge.example.com"},
				WSOrigins:        []string{"console.example.com"},
				StripHeaders:     []string{"X-Internal-User"},
				ForwardedHeaders: &yes,
			},
			{Kind: KindHTTP, Listen: ":80"},
			{Kind: KindTLS, Listen: ":8443"},
			{Kind: KindSOCKS5, Listen: ":1080", Users: []SOCKSUser{{Name: "alice", PasswordFile: "/etc/sallyport/socks/alice.password"}}},
		},
		Services: map[string]EdgeService{
			"db": {Listen: ":15432", Policy: Policy{
				Allow: []string{"10.0.0.0/8", "192.0.2.7"}, Deny: []string{"10.66.0.0/16"},
				MaxConnections: 100, Rate: Rate{Connections: 20, Per: time.Second, Burst: 40},
			}},
			"ssh":     {Listen: "0.0.0.0:2222"},
			"wiki":    {Hosts: []string{"wiki.example.com", "*.wiki.example.com"}},
			"console": {Hosts: []string{"console.example.com"}, Policy: Policy{ClientCA: "/etc/sallyport/tls/staff-ca.pem"}},
			"mqtt":    {SNI: []string{"mqtt.example.com"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeEdgeDefaults(t *testing.T) {
	got, err := DecodeEdge(strings.NewReader("data_dir: /d\nservices:\n  db:\n    listen: :0\n  web:\n    listen: :0\n"), "edge.yaml")
	if err != nil {
		t.Fatalf("DecodeEdge: %v", err)
	}
	got.Origin = Origin{}
	want := Edge{
		DataDir:                 "/d",
		Tunnel:                  EdgeTunnel{Listen: ":5500", KeepaliveInterval: 5 * time.Second, KeepaliveTimeout: 15 * time.Second, AnswerTimeout: 15 * time.Second, ReceiveBudgetMiB: 64, OpeningsPerSource: 32},
		Admin:                   Admin{Listen: "127.0.0.1:5501"},
		DrainTimeout:            30 * time.Second,
		Log:                     Log{Format: "text", Level: "info"},
		Audit:                   Audit{Retention: 90 * 24 * time.Hour},
		Limits:                  Limits{MaxClients: 4096, MaxClientsPerSource: 256},
		ConnectorCertificateTTL: 7 * 24 * time.Hour,
		Services:                map[string]EdgeService{"db": {Listen: ":0"}, "web": {Listen: ":0"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeEdgeAllowRemoteAdmin(t *testing.T) {
	e, err := DecodeEdge(strings.NewReader("data_dir: /d\nadmin:\n  listen: 0.0.0.0:5501\n  allow_remote: true\n"), "edge.yaml")
	if err != nil {
		t.Fatalf("DecodeEdge: %v", err)
	}
	if !e.Admin.AllowRemote || e.Admin.Listen != "0.0.0.0:5501" {
		t.Errorf("admin = %+v", e.Admin)
	}
}

func TestLoadEdgeMissingFile(t *testing.T) {
	_, err := LoadEdge(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want a not-exist error that is not ErrInvalid", err)
	}
	if !strings.HasPrefix(err.Error(), "load edge config: open ") {
		t.Errorf("err = %q, want it to name the operation", err)
	}
}

// TestEdgeFromFlags builds a config the way the CLI does without a file:
// problems then name the flag, or only the key.
func TestEdgeFromFlags(t *testing.T) {
	var e Edge
	for _, v := range []string{"db=:8080", "web=127.0.0.1:8080"} {
		name, svc, err := ParseExpose(v)
		if err != nil {
			t.Fatalf("ParseExpose(%q): %v", v, err)
		}
		if e.Services == nil {
			e.Services = make(map[string]EdgeService)
		}
		e.Services[name] = svc
		e.Origin.SetFlag("services."+name, "--expose")
	}
	e.ApplyDefaults()
	err := e.Validate()
	want := "data_dir: required: the directory where the edge keeps its CA, certificates and state\n" +
		`flag --expose: services.web.listen: address "127.0.0.1:8080" is already used by services.db.listen (":8080")`
	if err == nil || err.Error() != want {
		t.Errorf("Validate:\n got: %v\nwant: %s", err, want)
	}
}

// TestReadEdgeThenFlags lays a flag over a file, as the CLI does, and gets
// the file's and the flag's problems together.
func TestReadEdgeThenFlags(t *testing.T) {
	e, err := ReadEdge(strings.NewReader("tunnel:\n  keepalive_timeout: 1s\nlog:\n  format: yaml\n"), "edge.yaml")
	if err != nil {
		t.Fatalf("ReadEdge: %v", err)
	}
	e.DataDir = "/d"
	e.Origin.SetFlag("data_dir", "--data-dir")
	e.ApplyDefaults()
	want := "edge.yaml:2: tunnel.keepalive_timeout: must be longer than keepalive_interval (got 1s, interval 5s)\n" +
		`edge.yaml:4: log.format: unknown format "yaml" (use text or json)`
	if err := e.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate:\n got: %v\nwant: %s", err, want)
	}
}

func TestListenConflicts(t *testing.T) {
	tests := []struct {
		a, b  string
		clash bool
	}{
		{":8080", "127.0.0.1:8080", true},
		{"[::]:8080", "10.1.2.3:8080", true},
		{"10.1.2.3:8080", "0.0.0.0:8080", true},
		{"127.0.0.1:8080", "[::ffff:127.0.0.1]:8080", true},
		{"localhost:8080", "LOCALHOST:8080", true},
		{"127.0.0.1:8080", "127.0.0.2:8080", false},
		{"127.0.0.1:8080", "127.0.0.1:8081", false},
		{":0", ":0", false},
	}
	for _, tt := range tests {
		e := Edge{DataDir: "/d", Services: map[string]EdgeService{"a": {Listen: tt.a}, "b": {Listen: tt.b}}}
		e.ApplyDefaults()
		err := e.Validate()
		want := fmt.Sprintf("services.b.listen: address %q is already used by services.a.listen (%q)", tt.b, tt.a)
		switch {
		case tt.clash && (err == nil || err.Error() != want):
			t.Errorf("%s and %s: err = %v, want %s", tt.a, tt.b, err, want)
		case !tt.clash && err != nil:
			t.Errorf("%s and %s: err = %v, want none", tt.a, tt.b, err)
		}
	}
}

// connector_certificate_ttl is bounded: a zero or negative value after
// defaults, or a year and more, is refused, naming the key.
func TestEdgeConnectorCertificateTTL(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		ok   bool
	}{
		{"connector_certificate_ttl: 24h\n", true},
		{"connector_certificate_ttl: 1s\n", true},
		{"connector_certificate_ttl: 500ms\n", false},
		{"connector_certificate_ttl: -1h\n", false},
		{"connector_certificate_ttl: 8761h\n", false},
	} {
		_, err := DecodeEdge(strings.NewReader("data_dir: /d\n"+tc.yaml), "edge.yaml")
		if tc.ok && err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "connector_certificate_ttl")) {
			t.Errorf("%q: err = %v, want one naming connector_certificate_ttl", tc.yaml, err)
		}
	}
}

func TestDecodeEdgeStoreAndClusterProblems(t *testing.T) {
	checkEdgeErrors(t, []edgeErrorCase{
		{
			name: "external store and a cluster port",
			doc:  "data_dir: /d\nstore:\n  url: nats://n1:4222\ncluster:\n  listen: :6222\n",
			want: "edge.yaml:5: cluster.listen: an edge on an external NATS (store.url) runs no embedded server to cluster; remove one of the two",
		},
		{
			name: "credentials without a url",
			doc:  "data_dir: /d\nstore:\n  credentials: /etc/s.creds\n",
			want: "edge.yaml:3: store.credentials: is for an external NATS; set store.url too, or remove it",
		},
		{
			name: "cert without key",
			doc:  "data_dir: /d\nstore:\n  url: tls://n1:4222\n  cert: /c.pem\n",
			want: "edge.yaml:4: store.cert: store.cert and store.key go together: set both or neither",
		},
		{
			name: "two replicas",
			doc:  "data_dir: /d\nstore:\n  replicas: 2\n",
			want: "edge.yaml:3: store.replicas: must be 1 or 3 (got 2); 0 picks 3 when the cluster has three JetStream servers",
		},
		{
			name: "routes without a cluster port",
			doc:  "data_dir: /d\ncluster:\n  routes: [e2:6222]\n",
			want: "edge.yaml:2: cluster.listen: cluster.advertise and cluster.routes need cluster.listen, the cluster port",
		},
		{
			name: "bad route",
			doc:  "data_dir: /d\ncluster:\n  listen: :6222\n  routes: [e2]\n",
			want: "edge.yaml:4: cluster.routes[0]: " + checkAddr("e2", dialAddr),
		},
	})
}
