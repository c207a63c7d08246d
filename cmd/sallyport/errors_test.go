package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Mistakes an operator makes, as the operator sees them: a non-zero exit
// status and stderr that names where the mistake is and what to write.
func TestConfigErrorsOnStderr(t *testing.T) {
	tests := []struct {
		name string
		role string // edge or connector
		file string // config file contents; DATA is replaced by a data directory
		args []string
		want []string // each must appear in stderr; FILE is the config's path
	}{
		{
			name: "edge: unknown key",
			role: "edge",
			file: "data_dir: DATA\nservices:\n  db:\n    listn: 127.0.0.1:0\n",
			want: []string{"FILE:4: services.db.listn: unknown key (known: listen"},
		},
		{
			name: "edge: bad value",
			role: "edge",
			file: "data_dir: DATA\ntunnel:\n  keepalive_interval: 5x\n",
			want: []string{`FILE:3: tunnel.keepalive_interval: invalid duration "5x" (use e.g. 15s)`},
		},
		{
			name: "edge: both problems reported together",
			role: "edge",
			file: "data_dir: DATA\ntunnel:\n  keepalive_interval: 5x\nservices:\n  db:\n    listn: 127.0.0.1:0\n",
			want: []string{
				`FILE:3: tunnel.keepalive_interval: invalid duration "5x"`,
				"FILE:6: services.db.listn: unknown key",
			},
		},
		{
			name: "edge: a bad log level with file and line, among the other problems",
			role: "edge",
			file: "data_dir: DATA\nlog:\n  level: loud\ndrain_timeout: -1s\n",
			want: []string{
				`FILE:3: log.level: unknown level "loud"`,
				"FILE:4: drain_timeout: must be greater than zero",
			},
		},
		{
			name: "connector: a bad log format with file and line",
			role: "connector",
			file: "data_dir: DATA\nlog:\n  format: xml\nservices:\n  db:\n    address: 127.0.0.1:5432\n",
			want: []string{`FILE:3: log.format:`},
		},
		{
			name: "connector: back-end port out of range",
			role: "connector",
			file: "data_dir: DATA\nservices:\n  db:\n    address: 127.0.0.1:99999\n",
			want: []string{`FILE:4: services.db.address: port 99999 in "127.0.0.1:99999" is out of range`},
		},
		{
			name: "connector: back-end without a port",
			role: "connector",
			file: "data_dir: DATA\nservices:\n  db:\n    address: db.internal\n",
			want: []string{`FILE:4: services.db.address: invalid address "db.internal"`},
		},
		{
			name: "edge: --expose without '='",
			role: "edge",
			args: []string{"--expose", "db"},
			want: []string{`--expose`, `wants NAME=ADDRESS, e.g. db=:15432 (got "db")`},
		},
		{
			name: "connector: --service without '='",
			role: "connector",
			args: []string{"--service", "db"},
			want: []string{`--service`, `wants NAME=ADDRESS, e.g. db=127.0.0.1:5432 (got "db")`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			args := []string{tt.role}
			path := filepath.Join(dir, tt.role+".yaml")
			if tt.file != "" {
				if err := os.WriteFile(path, []byte(strings.ReplaceAll(tt.file, "DATA", data)), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", path)
			} else {
				args = append(args, "--data", data)
			}
			args = append(args, tt.args...)
			code, _, stderr := sallyport(t, args...)
			if code == 0 {
				t.Fatalf("sallyport %s exited 0; stderr:\n%s", strings.Join(args, " "), stderr)
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "FILE", path); !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "Usage:") {
				t.Errorf("stderr buries the problem under the usage text:\n%s", stderr)
			}
			// Nothing was started or written: the data directory is untouched.
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("a rejected config still created the data directory %s (stat: %v)", data, err)
			}
		})
	}
}

// A keyfile redeemed once is refused the second time: the second connector
// exits non-zero at once and says the token was already used.
func TestReusedKeyfileIsRefused(t *testing.T) {
	s := startSite(t, nil)
	other := filepath.Join(t.TempDir(), "connector-2")
	p := start(t, "second connector", nil, "connector", "--keyfile", s.keyfile, "--data", other, "--service", "echo="+s.echo.Addr())
	code := p.wait(t, 20*time.Second)
	stderr := p.Stderr.String()
	if code == 0 {
		t.Fatalf("the second connector exited 0; stderr:\n%s", stderr)
	}
	for _, want := range []string{"already used", "ask for a new keyfile"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(other, "connector.crt")); !os.IsNotExist(err) {
		t.Errorf("the refused connector holds a certificate (stat: %v)", err)
	}
	// The first connector is unaffected.
	if st := s.edge.status(t); st.tunnels["echo"] != 1 || len(st.connectors) != 1 {
		t.Errorf("after the refusal, status shows:\n%s\nwant echo with 1 tunnel from the one enrolled connector", st.text)
	}
	echoes(t, s.edge.services["echo"], payload(4<<10))
}

// Administration commands pointed at the wrong place say what to check.
func TestAdminCommandErrors(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := sallyport(t, "status", "--data", filepath.Join(dir, "nowhere"))
	if code == 0 || !strings.Contains(stderr, "--data set to its data directory") {
		t.Errorf("status with a wrong --data: exit %d, stderr:\n%s\nwant a non-zero exit that points at --data", code, stderr)
	}

	// An edge that has run once and stopped: its data directory is there,
	// its admin API is not.
	e := startEdge(t, filepath.Join(dir, "edge"), nil)
	e.Kill()
	code, _, stderr = sallyport(t, "token", "create", "--name", "site-b", "-o", filepath.Join(dir, "b.keyfile"), "--data", e.data)
	if code == 0 || !strings.Contains(stderr, "is the edge running?") {
		t.Errorf("token create with the edge down: exit %d, stderr:\n%s\nwant a non-zero exit that asks whether the edge runs", code, stderr)
	}

	code, _, stderr = sallyport(t, "connector", "--data", filepath.Join(dir, "never-enrolled"), "--service", "db=127.0.0.1:5432")
	if code == 0 || !strings.Contains(stderr, "start it once with --keyfile") {
		t.Errorf("connector without identity or keyfile: exit %d, stderr:\n%s\nwant a non-zero exit that says to use --keyfile", code, stderr)
	}
}
