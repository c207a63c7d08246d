package join_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// rawJoin sends req to the edge at addr as a joiner would, presenting
// clientCert if not nil, and returns the answer.
func rawJoin(t *testing.T, addr, pin string, req any, clientCert *tls.Certificate) (wire.JoinResponse, error) {
	t.Helper()
	return rawJoinFrom(t, freshSource(), addr, pin, req, clientCert)
}

// rawJoinFrom is rawJoin through dialer d.
func rawJoinFrom(t *testing.T, d *net.Dialer, addr, pin string, req any, clientCert *tls.Certificate) (wire.JoinResponse, error) {
	t.Helper()
	var resp wire.JoinResponse
	conf := pki.EnrollTLSConfig(pin, nil)
	if clientCert != nil {
		conf.Certificates = []tls.Certificate{*clientCert}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, conf)
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	err = tunnel.Handshake(ctx, tc, 10*time.Second, func() error {
		if b, ok := req.([]byte); ok { // raw bytes, written as they are
			_, err := tc.Write(b)
			if err != nil {
				return err
			}
		} else if err := wire.WriteMessage(tc, wire.KindJoinRequest, req); err != nil {
			return err
		}
		return wire.ReadExpect(tc, wire.KindJoinResponse, &resp)
	})
	return resp, err
}

func newCSR(t *testing.T) []byte {
	t.Helper()
	_, csr, err := pki.NewKeyAndCSR("x")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// The attacker's cases: each is refused with a clear reason, changes
// nothing, and is audited.
func TestJoinRefusals(t *testing.T) {
	a := startClusterEdge(t)
	addr := a.TunnelAddr().String()
	pin := edgeCA(t, a).Pin()

	t.Run("witness token never gets the CA key", func(t *testing.T) {
		_, kf := joinKeyfile(t, a, enroll.RoleWitness, time.Hour)
		resp, err := rawJoin(t, addr, pin, wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: joinerName, Advertise: joinerAdvertise}, nil)
		if err != nil || len(resp.CAKey) != 0 || len(resp.CA) == 0 || len(resp.Certificate) == 0 {
			t.Fatalf("witness join: %v, CA key %d bytes", err, len(resp.CAKey))
		}
		// A witness keyfile relabelled as an edge's gets no key either:
		// the edge goes by the stored token, and the joiner keeps nothing.
		_, kf = joinKeyfile(t, a, enroll.RoleWitness, time.Hour)
		kf.Role = enroll.RoleEdge
		dir := t.TempDir()
		if _, err := redeem(writeJoinKeyfile(t, kf), dir, enroll.RoleEdge); err == nil || !strings.Contains(err.Error(), "no CA key for an edge") {
			t.Fatalf("relabelled witness keyfile: %v", err)
		}
		wantNothingWritten(t, dir)
	})

	good := func(t *testing.T) (string, enroll.JoinKeyfile) { return joinKeyfile(t, a, enroll.RoleEdge, time.Hour) }
	cases := []struct {
		name  string
		edit  func(t *testing.T, kf *enroll.JoinKeyfile)
		code  wire.Code
		text  string
		audit string // the audit subject, when the token is real
	}{
		{"forged token", func(t *testing.T, kf *enroll.JoinKeyfile) {
			forged, _ := enroll.NewToken()
			kf.Token = forged.JoinString()
		}, wire.CodeTokenUnknown, "never issued token", ""},
		{"tampered secret", func(t *testing.T, kf *enroll.JoinKeyfile) {
			other, _ := enroll.NewToken()
			kf.Token = enroll.Token{ID: tokenID(t, *kf), Secret: other.Secret}.JoinString()
		}, wire.CodeTokenMismatch, "does not match", "token"},
		{"connector enrollment token", func(t *testing.T, kf *enroll.JoinKeyfile) {
			ckf, err := enroll.DecodeKeyfile(strings.NewReader(string(a.KeyfileBytes(t, "site-x", time.Hour))))
			if err != nil {
				t.Fatal(err)
			}
			id, secret, _ := enroll.ParseToken(ckf.Token)
			kf.Token = enroll.Token{ID: id, Secret: secret}.JoinString()
		}, wire.CodeTokenKind, "is a connector's enrollment token", "token"},
		{"revoked", func(t *testing.T, kf *enroll.JoinKeyfile) {
			if _, err := a.AdminClient(t).RevokeToken(context.Background(), tokenID(t, *kf)); err != nil {
				t.Fatal(err)
			}
		}, wire.CodeRevoked, "revoked", "token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, kf := good(t)
			tc.edit(t, &kf)
			dir := t.TempDir()
			_, err := redeem(writeJoinKeyfile(t, kf), dir, enroll.RoleEdge)
			testnet.WantRefusal(t, err, tc.code, tc.text)
			wantNothingWritten(t, dir)
			id := tokenID(t, kf)
			if tc.audit != "" {
				if tok := tokenState(t, a, id); tok.State == "used" {
					t.Errorf("token used by a refused join: %+v", tok)
				}
			}
			wantAudit(t, a, "join", "token "+id, "refused: ")
		})
	}

	t.Run("expired", func(t *testing.T) {
		path, kf := joinKeyfile(t, a, enroll.RoleEdge, 50*time.Millisecond)
		for !time.Now().After(kf.Expires) {
			time.Sleep(10 * time.Millisecond) // until the clock passes the expiry
		}
		dir := t.TempDir()
		_, err := redeem(path, dir, enroll.RoleEdge)
		testnet.WantRefusal(t, err, wire.CodeTokenExpired, "expired")
		wantNothingWritten(t, dir)
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "expired" {
			t.Errorf("token %+v", tok)
		}
	})

	t.Run("join token used to enroll a connector", func(t *testing.T) {
		_, kf := good(t)
		id, secret, _ := enroll.ParseJoinToken(kf.Token)
		ckf := enroll.Keyfile{Name: "site-y", Edges: []string{addr}, CAPin: pin, Token: enroll.Token{ID: id, Secret: secret}.String(), Expires: kf.Expires}
		path := filepath.Join(t.TempDir(), "site-y.keyfile")
		if err := enroll.WriteKeyfile(path, ckf); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "connector")
		c := testnet.StartConnector(t, path, testnet.ConnectorOptions{DataDir: dir, Services: map[string]string{"x": "127.0.0.1:1"}})
		err := c.Done(t, 20*time.Second)
		testnet.WantRefusal(t, err, wire.CodeTokenKind, "is a join token")
		if _, err := os.Stat(filepath.Join(dir, pki.ConnectorCertFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a connector certificate was issued for a join token (stat: %v)", err)
		}
		if tok := tokenState(t, a, id); tok.State != "unused" {
			t.Errorf("token %+v", tok)
		}
		wantAudit(t, a, "enroll", "token "+id, "refused: ")
	})

	t.Run("connector certificate", func(t *testing.T) {
		_, kf := good(t)
		cert, _ := pkitestConnector(t, edgeCA(t, a))
		_, err := rawJoin(t, addr, pin, wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: joinerName, Advertise: joinerAdvertise}, &cert)
		testnet.WantRefusal(t, err, wire.CodeBadRequest, "a connector cannot join")
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
			t.Errorf("token %+v", tok)
		}
		wantAudit(t, a, "join", "", "refused: a join request comes from a new member")
	})

	t.Run("malformed requests", func(t *testing.T) {
		_, kf := good(t)
		for _, bad := range []struct {
			req  any
			text string
		}{
			{map[string]any{"token": kf.Token, "csr": newCSR(t), "name": joinerName, "advertise": joinerAdvertise, "ca_key": "please"}, "unknown field"},
			{wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: "edge-b", Advertise: joinerAdvertise}, "bad member name"},
			{wire.JoinRequest{Token: kf.Token, CSR: newCSR(t), Name: joinerName, Advertise: "edge-b"}, "bad cluster advertise"},
			{wire.JoinRequest{Token: kf.Token, CSR: []byte("not a CSR"), Name: joinerName, Advertise: joinerAdvertise}, "certificate request refused"},
			{wire.JoinRequest{Token: "sp1.x.y", Name: joinerName, Advertise: joinerAdvertise}, "malformed join token"},
		} {
			_, err := rawJoin(t, addr, pin, bad.req, nil)
			var ref *wire.Refusal
			if !errors.As(err, &ref) || !strings.Contains(ref.Reason, bad.text) {
				t.Errorf("request %v: %v; want a refusal saying %q", bad.req, err, bad.text)
			}
		}
		// Larger than a handshake message may be: the edge closes.
		huge := append([]byte{byte(wire.KindJoinRequest), 0, 1, 0, 1}, make([]byte, 100)...)
		if _, err := rawJoin(t, addr, pin, huge, nil); err == nil || errors.As(err, new(*wire.Refusal)) {
			t.Errorf("an oversized join request: %v; want the connection closed", err)
		}
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
			t.Errorf("token after malformed requests: %+v", tok)
		}
	})

	t.Run("wrong CA pin", func(t *testing.T) {
		_, kf := good(t)
		kf.CAPin = pkitestCA(t).Pin()
		dir := t.TempDir()
		_, err := redeem(writeJoinKeyfile(t, kf), dir, enroll.RoleEdge)
		var pm *pki.PinMismatchError
		if !errors.As(err, &pm) {
			t.Fatalf("join with another CA's pin: %v", err)
		}
		wantNothingWritten(t, dir)
	})

	t.Run("data directory with a CA of its own", func(t *testing.T) {
		path, kf := good(t)
		dir := t.TempDir()
		own, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = redeem(path, dir, enroll.RoleEdge)
		if !errors.Is(err, pki.ErrOtherCA) || !strings.Contains(err.Error(), "would replace it") {
			t.Fatalf("join over another CA: %v", err)
		}
		still, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), time.Now())
		if err != nil || still.Pin() != own.Pin() {
			t.Errorf("the directory's own CA changed (%v)", err)
		}
		if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
			t.Errorf("token %+v", tok)
		}
	})
}

// An edge that runs no cluster port makes no join keyfile, and refuses a
// join keyfile it made while it had one.
func TestJoinNeedsClusterPort(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "edge-a")
	a := testnet.StartEdge(t, testnet.EdgeOptions{DataDir: dataDir, Tune: withCluster})
	path, kf := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	a = testnet.StartEdge(t, testnet.EdgeOptions{DataDir: dataDir, TunnelListen: kf.Edges[0]})
	_, err := a.AdminClient(t).CreateJoinKeyfile(context.Background(), admin.JoinTokenRequest{})
	if err == nil || !strings.Contains(err.Error(), "runs no cluster port") {
		t.Errorf("join keyfile from an edge without a cluster port: %v", err)
	}
	dir := t.TempDir()
	_, err = redeem(path, dir, enroll.RoleEdge)
	testnet.WantRefusal(t, err, wire.CodeNoCluster, "runs no cluster port")
	wantNothingWritten(t, dir)
	if tok := tokenState(t, a, tokenID(t, kf)); tok.State != "unused" {
		t.Errorf("token %+v", tok)
	}
}

// TestJoinFailuresSlowed: after a failed join, the address it came from
// is refused as busy for a while, saying when to try again; a joiner at
// another address is not slowed (a global bound let one attacker make
// every join busy).
func TestJoinFailuresSlowed(t *testing.T) {
	a := startClusterEdge(t)
	addr := a.TunnelAddr().String()
	pin := edgeCA(t, a).Pin()
	forged, _ := enroll.NewToken()
	attacker := freshSource()
	forge := func() error {
		_, err := rawJoinFrom(t, attacker, addr, pin, wire.JoinRequest{Token: forged.JoinString(), CSR: newCSR(t), Name: joinerName, Advertise: joinerAdvertise}, nil)
		return err
	}
	testnet.WantRefusal(t, forge(), wire.CodeTokenUnknown, "never issued")
	testnet.WantRefusal(t, forge(), wire.CodeBusy, "from your address")

	path, _ := joinKeyfile(t, a, enroll.RoleEdge, time.Hour)
	other := freshSource()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := join.Redeem(ctx, join.Options{Keyfile: path, DataDir: t.TempDir(), Role: enroll.RoleEdge, Name: joinerName,
		Advertise: joinerAdvertise, Dial: other.DialContext}); err != nil {
		t.Fatalf("a join from another address right after the forged ones: %v", err)
	}
}

func pkitestCA(t *testing.T) *pki.CA { return pkitest.NewCA(t) }

func pkitestConnector(t *testing.T, ca *pki.CA) (tls.Certificate, string) {
	return pkitest.Connector(t, ca, "site-a", time.Hour)
}
