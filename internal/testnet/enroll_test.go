package testnet_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/wire"
)

// rewriteKeyfile reads a keyfile, lets edit change it, and writes it to a
// new file whose path it returns.
func rewriteKeyfile(t *testing.T, path string, edit func(*enroll.Keyfile)) string {
	t.Helper()
	kf, err := enroll.ReadKeyfile(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(&kf)
	out := filepath.Join(t.TempDir(), "edited.keyfile")
	b, err := kf.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// enrollFails runs a connector with keyfile and returns the error it
// stops with; it checks that nothing was issued into its data directory.
func enrollFails(t *testing.T, keyfile string) error {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "connector")
	c := testnet.StartConnector(t, keyfile, testnet.ConnectorOptions{DataDir: dir, Services: map[string]string{"x": "127.0.0.1:1"}})
	err := c.Done(t, 20*time.Second)
	if err == nil {
		t.Fatal("connector ran with a keyfile that should be refused")
	}
	if _, statErr := os.Stat(filepath.Join(dir, pki.ConnectorCertFile)); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("a certificate was saved despite the refusal (stat: %v)", statErr)
	}
	return err
}

func TestEnrollmentRefusals(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{})
	good := e.Keyfile(t, "site-a", time.Hour)

	t.Run("forged token", func(t *testing.T) {
		forged, _ := enroll.NewToken()
		err := enrollFails(t, rewriteKeyfile(t, good, func(k *enroll.Keyfile) { k.Token = forged.String() }))
		testnet.WantRefusal(t, err, wire.CodeTokenUnknown, "never issued token "+forged.ID)
	})
	t.Run("tampered secret", func(t *testing.T) {
		other, _ := enroll.NewToken()
		err := enrollFails(t, rewriteKeyfile(t, good, func(k *enroll.Keyfile) {
			id, _, _ := enroll.ParseToken(k.Token)
			k.Token = enroll.Token{ID: id, Secret: other.Secret}.String()
		}))
		testnet.WantRefusal(t, err, wire.CodeTokenMismatch, "does not match what this edge issued")
	})
	t.Run("expired token", func(t *testing.T) {
		short := e.Keyfile(t, "site-b", 100*time.Millisecond)
		kf, err := enroll.ReadKeyfile(short)
		if err != nil {
			t.Fatal(err)
		}
		// Until the expiry the keyfile states has passed.
		for !kf.Expired(time.Now()) {
			time.Sleep(10 * time.Millisecond)
		}
		err = enrollFails(t, short)
		testnet.WantRefusal(t, err, wire.CodeTokenExpired, "expired at")
	})
	t.Run("wrong pin", func(t *testing.T) {
		other := testnet.StartRogueEdge(t)
		err := enrollFails(t, rewriteKeyfile(t, good, func(k *enroll.Keyfile) { k.CAPin = other.CA.Pin() }))
		var pm *pki.PinMismatchError
		if !errors.As(err, &pm) {
			t.Fatalf("error = %v; want a pin mismatch", err)
		}
		if pm.Want != other.CA.Pin() || !strings.Contains(err.Error(), "another edge") {
			t.Fatalf("pin mismatch error does not tell what happened: %v", err)
		}
	})

	// The good keyfile was refused for its tampered copies and is still
	// usable once; then it is used up.
	first := testnet.StartConnector(t, good, testnet.ConnectorOptions{Services: map[string]string{"x": "127.0.0.1:1"}})
	first.WaitTunnels(t, 1)
	t.Run("reused token", func(t *testing.T) {
		err := enrollFails(t, good)
		testnet.WantRefusal(t, err, wire.CodeTokenUsed, "already used")
	})
	// The wrong pin is refused by the connector during TLS, before it
	// shows the edge its token; the four others are refused by the edge.
	if n := e.Logs.Count("enrollment refused"); n != 4 {
		t.Errorf("edge logged %d refused enrollments, want 4 (one each):\n%s", n, e.Logs)
	}
	st := e.Status(context.Background())
	if len(st.Connectors) != 1 {
		t.Errorf("edge has %d connectors after one good enrollment, want 1", len(st.Connectors))
	}
	// Each counted under its result, for an operator's alert on them.
	s := scrape(t, e.AdminAddr().String(), metricsToken(t, e.Cfg.DataDir))
	for result, n := range map[string]float64{"ok": 1, "token_unknown": 1, "token_mismatch": 1, "token_expired": 1, "token_used": 1} {
		s.want(t, `sallyport_edge_enrollments_total{result="`+result+`"}`, n)
	}
}

func TestEnrolledConnectorRestartsWithoutKeyfile(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	dir := filepath.Join(t.TempDir(), "connector")
	opts := testnet.ConnectorOptions{DataDir: dir, Services: map[string]string{"echo": echo.Addr()}}
	c := testnet.StartConnector(t, e.Keyfile(t, "site-a", time.Hour, "echo"), opts)
	c.WaitTunnels(t, 1)
	c.Stop()
	e.WaitRoutes(t, "echo", 0, 5*time.Second)
	again := testnet.StartConnector(t, "", opts)
	again.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 5*time.Second)
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("ping")); string(got) != "ping" {
		t.Fatalf("echo after restart: %q", got)
	}
	if n := e.Logs.Count("connector enrolled"); n != 1 {
		t.Fatalf("edge enrolled %d times, want once", n)
	}
}

func TestKeyfileIsReadableAndSecret(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{})
	path := e.Keyfile(t, "site-a", time.Hour)
	kf, err := enroll.ReadKeyfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if kf.Name != "site-a" || len(kf.Edges) != 1 || kf.Edges[0] != e.TunnelAddr().String() {
		t.Fatalf("keyfile = %+v", kf)
	}
	if kf.Expires.Before(time.Now().Add(59*time.Minute)) || kf.Expires.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("keyfile expires at %s, want about an hour from now", kf.Expires)
	}
	// Only a hash of the token may be stored by the edge.
	id, secret, _ := enroll.ParseToken(kf.Token)
	var leaked []string
	filepath.Walk(e.Cfg.DataDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
				leaked = append(leaked, p)
			}
		}
		return nil
	})
	if len(leaked) > 0 {
		t.Fatalf("token %s secret found in clear in %v", id, leaked)
	}
	info, err := os.Stat(filepath.Join(e.Cfg.DataDir, "admin.token"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
}

// A connector keeps the edge address it enrolled through: when the edge
// advertises a name this side cannot resolve, a connector enrolled with a
// keyfile made for a reachable address (token create --edge) dials that
// address again after a restart, without its keyfile.
func TestConnectorKeepsTheAddressItEnrolledThrough(t *testing.T) {
	echo := testnet.Echo(t)
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}, Advertise: []string{"edge.unresolvable.invalid:5500"}})
	kf, err := e.AdminClient(t).CreateKeyfile(context.Background(), admin.TokenRequest{Name: "site-a", TTL: "1h",
		Edges: []string{e.TunnelAddr().String()}, Services: []string{"echo"}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "site-a.keyfile")
	if err := os.WriteFile(path, kf, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := testnet.ConnectorOptions{DataDir: filepath.Join(t.TempDir(), "connector"), Services: map[string]string{"echo": echo.Addr()}}
	first := testnet.StartConnector(t, path, opts)
	first.WaitTunnels(t, 1)
	// The edge announces itself at the advertised name; the connector
	// saves that with the id its own address answered as, so that the
	// restart below does not dial the name either.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(opts.DataDir, "cluster.json")); err == nil && strings.Contains(string(b), "edge.unresolvable.invalid") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connector did not save the announced edge set")
		}
	}
	first.Stop()
	again := testnet.StartConnector(t, "", opts)
	again.WaitTunnels(t, 1)
	if n := again.Logs.Count("edge.unresolvable.invalid"); n != 0 {
		t.Errorf("the restarted connector dialed the advertised name %d times; it must keep the address it enrolled through", n)
	}
}
