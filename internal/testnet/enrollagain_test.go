package testnet_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// redeemRaw sends one enrollment request for kf's token with a CSR for
// key to the edge at addr, as a connector does, and returns the answer.
func redeemRaw(t *testing.T, addr string, kf enroll.Keyfile, key *ecdsa.PrivateKey) (wire.EnrollResponse, error) {
	t.Helper()
	csr, err := pki.NewCSR(key, kf.Name)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", addr, pki.EnrollTLSConfig(kf.CAPin, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var resp wire.EnrollResponse
	err = tunnel.Handshake(t.Context(), tc, 10*time.Second, func() error {
		if err := wire.WriteMessage(tc, wire.KindEnrollRequest, wire.EnrollRequest{Token: kf.Token, CSR: csr}); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindEnrollResponse, &resp)
	})
	return resp, err
}

func readKeyfile(t *testing.T, path string) enroll.Keyfile {
	t.Helper()
	kf, err := enroll.ReadKeyfile(path)
	if err != nil {
		t.Fatal(err)
	}
	return kf
}

func wantTokenUsed(t *testing.T, err error, who string) {
	t.Helper()
	var ref *wire.Refusal
	if !errors.As(err, &ref) || ref.Code != wire.CodeTokenUsed || !strings.Contains(ref.Reason, "already used") {
		t.Fatalf("%s redeemed a used token: %v; want the token-used refusal", who, err)
	}
}

// TestEnrollAgainWithTheSameKey: a used token redeemed again with the key
// it was first redeemed with (the connector never got the answer) buys a
// certificate for the same identity; with any other key, or once the
// connector is revoked, it is refused as used.
func TestEnrollAgainWithTheSameKey(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	kf := readKeyfile(t, e.Keyfile(t, "site", time.Hour, "echo"))
	addr := e.TunnelAddr().String()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	first, err := redeemRaw(t, addr, kf, key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := redeemRaw(t, addr, kf, key)
	if err != nil {
		t.Fatalf("the same key could not redeem its token again: %v", err)
	}
	if again.ConnectorID != first.ConnectorID {
		t.Fatalf("redeemed again as %s, first as %s: want one identity", again.ConnectorID, first.ConnectorID)
	}
	cert, err := x509.ParseCertificate(again.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if pki.ConnectorID(cert) != first.ConnectorID || !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatalf("the second certificate is for %s and another key", pki.ConnectorID(cert))
	}
	e.Logs.WaitFor(t, 5*time.Second, 1, "enrollment redeemed again with the same key", "connector="+first.ConnectorID)

	// An attacker with the used keyfile but not the key.
	thief, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	_, err = redeemRaw(t, addr, kf, thief)
	wantTokenUsed(t, err, "another key")

	// A revoked connector's key.
	if _, err := e.AdminClient(t).RevokeConnector(t.Context(), first.ConnectorID); err != nil {
		t.Fatal(err)
	}
	_, err = redeemRaw(t, addr, kf, key)
	wantTokenUsed(t, err, "the revoked connector's key")
}

// TestConnectorEnrollsAfterLostAnswer: the edge consumed the token, but
// the connector was stopped before the answer reached it. Started again
// with the same keyfile and data directory, it enrolls as the identity
// the edge recorded and serves; its enrollment key is then gone.
func TestConnectorEnrollsAfterLostAnswer(t *testing.T) {
	e := testnet.StartEdge(t, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	keyfile := e.Keyfile(t, "site", time.Hour, "echo")
	dir := filepath.Join(t.TempDir(), "connector")
	key, err := pki.EnrollKey(dir) // what the connector kept before it asked
	if err != nil {
		t.Fatal(err)
	}
	lost, err := redeemRaw(t, e.TunnelAddr().String(), readKeyfile(t, keyfile), key)
	if err != nil {
		t.Fatal(err)
	}

	echo := testnet.Echo(t)
	conn := testnet.StartConnector(t, keyfile, testnet.ConnectorOptions{DataDir: dir, Services: map[string]string{"echo": echo.Addr()}})
	conn.WaitTunnels(t, 1)
	e.WaitRoutes(t, "echo", 1, 10*time.Second)
	conn.Logs.WaitFor(t, 5*time.Second, 1, "connector enrolled", "connector="+lost.ConnectorID)
	if _, err := os.Stat(filepath.Join(dir, "enroll.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the enrollment key is still there after the identity was saved: %v", err)
	}
	if got := roundTrip(t, e.Dial(t, "echo"), []byte("again")); string(got) != "again" {
		t.Fatalf("through the connector: %q", got)
	}
}
