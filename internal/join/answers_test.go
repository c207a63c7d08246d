package join_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/join"
	"github.com/sallyport/sallyport/internal/pki"
	"github.com/sallyport/sallyport/internal/pki/pkitest"
	"github.com/sallyport/sallyport/internal/testnet"
	"github.com/sallyport/sallyport/internal/tunnel"
	"github.com/sallyport/sallyport/internal/wire"
)

// rogueJoin makes a join keyfile pinned to a rogue edge's CA, runs the
// joiner against it in the background, and returns the rogue, the
// connection it accepted after the join request was read, the request,
// and the channel of the joiner's result.
func rogueJoin(t *testing.T, dir string) (*testnet.RogueEdge, *tls.Conn, wire.JoinRequest, <-chan error) {
	t.Helper()
	return rogueJoinBy(t, dir, func(path, dir string) (join.Result, error) { return redeem(path, dir, enroll.RoleEdge) })
}

// rogueJoinBy is rogueJoin with the joiner's redeem.
func rogueJoinBy(t *testing.T, dir string, redeem func(path, dir string) (join.Result, error)) (*testnet.RogueEdge, *tls.Conn, wire.JoinRequest, <-chan error) {
	t.Helper()
	r := testnet.StartRogueEdge(t)
	forged, _ := enroll.NewToken()
	path := writeJoinKeyfile(t, enroll.JoinKeyfile{Role: enroll.RoleEdge, Edges: []string{r.Addr()}, CAPin: r.CA.Pin(),
		Token: forged.JoinString(), Expires: time.Now().Add(time.Hour)})
	done := make(chan error, 1)
	go func() {
		_, err := redeem(path, dir)
		done <- err
	}()
	tc := r.AcceptTLS(t)
	kind, body, err := tunnel.ReadOpening(context.Background(), tc, tunnel.Config{})
	if err != nil || kind != wire.KindJoinRequest {
		t.Fatalf("rogue edge: opening %v, %v", kind, err)
	}
	var req wire.JoinRequest
	if err := wire.Decode(kind, body, &req); err != nil {
		t.Fatal(err)
	}
	return r, tc, req, done
}

// An edge that predates joins reads the request's kind as malformed and
// closes: the joiner says so, once, and writes nothing.
func TestJoinAtAnOlderEdge(t *testing.T) {
	dir := t.TempDir()
	_, tc, _, done := rogueJoin(t, dir)
	tc.Close() // what an older edge does with an unknown message kind
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "older than this one") {
		t.Fatalf("join at an older edge: %v", err)
	}
	wantNothingWritten(t, dir)
}

// A joiner keeps nothing of an answer that does not hold together, even
// from an edge of the pinned CA.
func TestJoinerChecksTheAnswer(t *testing.T) {
	other := pkitest.NewCA(t)
	for _, tc := range []struct {
		name string
		edit func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse)
		text string
	}{
		{"route certificate for another key", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Certificate = routeFor(t, r.CA, newCSR(t), req.Name)
		}, "not for this member's key"},
		{"another CA's key", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.CAKey, _ = other.MarshalKey()
		}, "does not belong to the CA certificate"},
		{"a CA other than the pinned one", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.CA = other.Certificate().Raw
		}, "not the one the keyfile pins"},
		{"another name", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Certificate = routeFor(t, r.CA, req.CSR, "sallyport-edge-ffffffff")
		}, `is for "sallyport-edge-ffffffff"`},
		{"no routes", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Routes = nil
		}, "no routes: the answering edge keeps its state on an external NATS"},
		{"a bad route", func(r *testnet.RogueEdge, req wire.JoinRequest, resp *wire.JoinResponse) {
			resp.Routes = []string{"nats://x:1"}
		}, "route:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r, conn, req, done := rogueJoin(t, dir)
			key, _ := r.CA.MarshalKey()
			resp := wire.JoinResponse{CA: r.CA.Certificate().Raw, CAKey: key, Certificate: routeFor(t, r.CA, req.CSR, req.Name), Routes: []string{"127.0.0.1:1"}}
			tc.edit(r, req, &resp)
			if err := wire.WriteMessage(conn, wire.KindJoinResponse, resp); err != nil {
				t.Fatal(err)
			}
			err := <-done
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("joiner took a bad answer: %v; want it to say %q", err, tc.text)
			}
			wantNothingWritten(t, dir)
		})
	}
}

// routeFor signs a route certificate for csr as an edge would.
func routeFor(t *testing.T, ca *pki.CA, csr []byte, name string) []byte {
	t.Helper()
	der, err := ca.SignRoute(csr, name, []string{"127.0.0.1"}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
