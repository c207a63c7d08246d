package main_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/wire"
)

// The README's quick start, by flags, command by command: edge, token,
// connector, a client through the edge, status.
func TestQuickStartByFlags(t *testing.T) {
	dir := t.TempDir()
	echo := testnet.Echo(t)
	edge := startEdge(t, filepath.Join(dir, "edge"), []string{"echo"})

	keyfile := filepath.Join(dir, "site-a.keyfile")
	out := mustRun(t, "token", "create", "--name", "site-a", "--service", "echo", "--ttl", "1h", "-o", keyfile, "--data", edge.data)
	if !strings.Contains(out, "wrote "+keyfile) || !strings.Contains(out, "sallyport connector --keyfile "+keyfile) {
		t.Errorf("token create printed:\n%s\nwant the keyfile's path and the connector command to run", out)
	}
	if m := fileMode(t, keyfile); m != 0o600 {
		t.Errorf("keyfile mode %v, want 0600: it holds a secret", m)
	}

	connData := filepath.Join(dir, "connector")
	conn := startConnector(t, "--keyfile", keyfile, "--data", connData, "--service", "echo="+echo.Addr())
	st := edge.waitTunnels(t, "echo", 1, 10*time.Second)

	data := payload(48 << 10)
	echoes(t, edge.services["echo"], data)

	if len(st.connectors) != 1 || st.connectors[0].name != "site-a" || st.connectors[0].services != "echo" || st.connectors[0].via != "tcp" {
		t.Errorf("status lists connectors %+v, want site-a offering echo via tcp; output:\n%s", st.connectors, st.text)
	}
	if !strings.Contains(st.text, edge.services["echo"]) {
		t.Errorf("status does not show echo's public address %s:\n%s", edge.services["echo"], st.text)
	}
	// The connector's data directory now holds its identity, key private.
	if m := fileMode(t, filepath.Join(connData, "connector.key")); m&0o077 != 0 {
		t.Errorf("connector key mode %v: readable by others", m)
	}
	// The connector's log accounts for the stream the client rode on.
	conn.waitLog(t, `msg="stream closed" service=echo`, 1, 5*time.Second)
	if want := fmt.Sprintf("bytes_in=%d bytes_out=%d", len(data), len(data)); conn.Stderr.Count(want) != 1 {
		t.Errorf("connector log does not account for the %d bytes each way (%q):\n%s", len(data), want, conn.Stderr.String())
	}
}

func TestVersion(t *testing.T) {
	out := mustRun(t, "version")
	want := fmt.Sprintf("sallyport %s (tunnel protocol %d)\n", testVersion, wire.Version)
	if out != want {
		t.Fatalf("sallyport version printed %q, want %q", out, want)
	}
}

func TestVersionFlag(t *testing.T) {
	if out, want := mustRun(t, "--version"), mustRun(t, "version"); out != want {
		t.Fatalf("sallyport --version printed %q, want what sallyport version prints, %q", out, want)
	}
}
