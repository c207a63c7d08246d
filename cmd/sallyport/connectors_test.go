package main_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/store"
)

// The connector lifecycle from the CLI, as the README's Connectors
// section shows it, with every step read back from `sallyport audit`
// exactly once.
func TestConnectorsCommandsAndAudit(t *testing.T) {
	s := startSite(t, nil)
	data := s.edge.data
	var cs []admin.Connector
	if err := json.Unmarshal([]byte(mustRun(t, "connectors", "list", "--data", data, "--json")), &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Name != "site-a" || strings.Join(cs[0].Grants, ",") != "echo" || cs[0].Tunnels != 1 || cs[0].NotAfter.IsZero() {
		t.Fatalf("connectors list: %+v; want site-a granted echo with one tunnel and its certificate's expiry", cs)
	}
	if out := mustRun(t, "connectors", "list", "--data", data); !strings.Contains(out, "site-a") || !strings.Contains(out, "CERT EXPIRES") {
		t.Errorf("connectors list prints:\n%s", out)
	}

	mustRun(t, "connectors", "ungrant", "site-a", "echo", "--data", data)
	s.edge.waitTunnels(t, "echo", 0, 5*time.Second)
	mustRun(t, "connectors", "grant", "site-a", "echo", "--data", data)
	s.edge.waitTunnels(t, "echo", 1, 5*time.Second)
	if n := strings.Count(s.conn.Stderr.String(), `msg="tunnel up"`); n != 1 {
		t.Errorf("the connector brought %d tunnels up; a grant must apply without a reconnect", n)
	}

	code, _, stderr := sallyport(t, "token", "create", "--name", "site-a", "--service", "echo", "-o", filepath.Join(t.TempDir(), "again.keyfile"), "--data", data)
	if code == 0 || !strings.Contains(stderr, "--replace") {
		t.Errorf("token create for an enrolled name: exit %d, stderr:\n%s\nwant a refusal that names --replace", code, stderr)
	}
	kf := filepath.Join(t.TempDir(), "site-b.keyfile")
	if out := mustRun(t, "token", "create", "--name", "site-b", "-o", kf, "--data", data); !strings.Contains(out, "sallyport connectors grant site-b SERVICE") {
		t.Errorf("token create without --service says:\n%s\nwant a note that it grants nothing and how to grant", out)
	}
	code, _, stderr = sallyport(t, "token", "create", "--name", "site-c", "-o", kf, "--data", data)
	if code == 0 || !strings.Contains(stderr, "not overwritten without --force") {
		t.Errorf("token create onto an existing file: exit %d, stderr:\n%s", code, stderr)
	}
	mustRun(t, "token", "create", "--name", "site-c", "-o", kf, "--force", "--data", data)
	var toks []admin.Token
	if err := json.Unmarshal([]byte(mustRun(t, "tokens", "list", "--data", data, "--json")), &toks); err != nil {
		t.Fatal(err)
	}
	var siteB string
	for _, tk := range toks {
		if tk.Name == "site-b" && tk.State == "unused" {
			siteB = tk.ID
		}
	}
	if siteB == "" {
		t.Fatalf("tokens list: %+v; want site-b's unused token", toks)
	}
	if out := mustRun(t, "tokens", "revoke", siteB, "--data", data); !strings.Contains(out, "revoked") {
		t.Errorf("tokens revoke says:\n%s", out)
	}

	mustRun(t, "connectors", "revoke", "site-a", "--data", data)
	s.edge.waitTunnels(t, "echo", 0, 5*time.Second)
	if code := s.conn.wait(t, 20*time.Second); code == 0 {
		t.Errorf("the revoked connector exited 0")
	}
	if !strings.Contains(s.conn.Stderr.String(), "revoked at") {
		t.Errorf("the revoked connector's log does not say why:\n%s", s.conn.Stderr.String())
	}

	out := mustRun(t, "audit", "--data", data, "--json")
	count := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev store.AuditEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit --json line %q: %v", line, err)
		}
		if ev.Action != "admin.call" {
			count[fmt.Sprintf("%s %s", ev.Action, strings.SplitN(ev.Result, ":", 2)[0])]++
		}
	}
	for _, want := range []string{"token.create ok", "enroll ok", "ungrant ok", "grant ok", "token.create refused", "token.revoke ok", "revoke ok"} {
		n := 1
		if want == "token.create ok" {
			n = 3 // site-a's, site-b's, site-c's
		}
		if count[want] != n {
			t.Errorf("audit: %d events %q, want %d; all:\n%s", count[want], want, n, out)
		}
	}
	if text := mustRun(t, "audit", "--data", data, "--since", "1h"); !strings.Contains(text, "admin via socket") || !strings.Contains(text, "revoke") {
		t.Errorf("audit prints:\n%s", text)
	}
}
