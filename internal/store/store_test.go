package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// openStore opens an embedded store in dir and closes it when the test ends.
func openStore(t testing.TB, dir string) *JetStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// testLogger shows the store's warnings and errors in the test output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newToken(id string) Token {
	sum := sha256.Sum256([]byte("secret of " + id))
	now := time.Now().Truncate(time.Second)
	return Token{
		ID:         id,
		SecretHash: sum[:],
		Name:       "site-" + id,
		CreatedAt:  now,
		ExpiresAt:  now.Add(time.Hour),
	}
}

func sameToken(a, b Token) bool {
	return a.ID == b.ID && bytes.Equal(a.SecretHash, b.SecretHash) && a.Name == b.Name &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.UsedAt.Equal(b.UsedAt) && a.UsedBy == b.UsedBy
}

func sameConnector(a, b Connector) bool {
	return a.ID == b.ID && a.Name == b.Name && a.TokenID == b.TokenID &&
		a.EnrolledAt.Equal(b.EnrolledAt) && a.NotAfter.Equal(b.NotAfter) && a.RevokedAt.Equal(b.RevokedAt)
}

var errUsed = errors.New("token already used")

// refuseUsed is the minimal redemption policy: a token is good once.
func refuseUsed(t Token) error {
	if t.Used() {
		return errUsed
	}
	return nil
}

func TestTokenRoundTrip(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	want := newToken("tok_A-1")
	if err := s.CreateToken(ctx, want); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	got, err := s.GetToken(ctx, want.ID)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if !sameToken(got, want) {
		t.Fatalf("GetToken = %+v, want %+v", got, want)
	}
	if got.Used() {
		t.Fatalf("new token reads as used: %+v", got)
	}
}

func TestCreateTokenDuplicate(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	first := newToken("dup")
	if err := s.CreateToken(ctx, first); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	second := newToken("dup")
	second.Name = "attacker"
	err := s.CreateToken(ctx, second)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second CreateToken error = %v, want ErrExists", err)
	}
	got, err := s.GetToken(ctx, "dup")
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	if !sameToken(got, first) {
		t.Fatalf("duplicate create changed the token: got %+v, want %+v", got, first)
	}
}

func TestNotFound(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	if _, err := s.GetToken(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetToken error = %v, want ErrNotFound", err)
	}
	called := false
	_, err := s.ConsumeToken(ctx, "nope", func(Token) error { called = true; return nil }, "c1", time.Now())
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("ConsumeToken error = %v, want ErrNotFound", err)
	}
	if called {
		t.Errorf("ConsumeToken called check for a missing token")
	}
	if _, err := s.GetConnector(ctx, "0a1b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetConnector error = %v, want ErrNotFound", err)
	}
}

func TestInvalidIDs(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	bad := []string{"", "a.b", "a b", "*", ">", "a/b", "tok=", "é", strings.Repeat("a", maxIDLen+1), ".", "a\x00"}
	for _, id := range bad {
		t.Run(fmt.Sprintf("%q", id), func(t *testing.T) {
			ops := map[string]error{
				"CreateToken":  s.CreateToken(ctx, newToken(id)),
				"PutConnector": s.PutConnector(ctx, Connector{ID: id}),
			}
			_, ops["GetToken"] = s.GetToken(ctx, id)
			_, ops["ConsumeToken"] = s.ConsumeToken(ctx, id, refuseUsed, "c1", time.Now())
			_, ops["GetConnector"] = s.GetConnector(ctx, id)
			for op, err := range ops {
				if !errors.Is(err, ErrInvalidID) {
					t.Errorf("%s(%q) error = %v, want ErrInvalidID", op, id, err)
				}
			}
		})
	}
	// The longest valid id is accepted.
	long := strings.Repeat("f", maxIDLen)
	if err := s.PutConnector(ctx, Connector{ID: long}); err != nil {
		t.Errorf("PutConnector with a %d-byte id: %v", maxIDLen, err)
	}
}

func TestCreateTokenRefusesRawSecret(t *testing.T) {
	s := openStore(t, t.TempDir())
	tok := newToken("raw")
	tok.SecretHash = []byte("the-secret-itself")
	err := s.CreateToken(t.Context(), tok)
	if err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("CreateToken with a 17-byte hash error = %v, want one naming SHA-256", err)
	}
	if _, err := s.GetToken(t.Context(), "raw"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused token was stored: GetToken error = %v", err)
	}
}

func TestConsumeToken(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	tok := newToken("once")
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Truncate(time.Millisecond)
	got, err := s.ConsumeToken(ctx, "once", refuseUsed, "c0ffee", at)
	if err != nil {
		t.Fatalf("first ConsumeToken: %v", err)
	}
	if !got.UsedAt.Equal(at) || got.UsedBy != "c0ffee" {
		t.Fatalf("ConsumeToken returned %+v, want used by c0ffee at %v", got, at)
	}
	stored, err := s.GetToken(ctx, "once")
	if err != nil {
		t.Fatal(err)
	}
	if !sameToken(stored, got) {
		t.Fatalf("stored %+v, returned %+v", stored, got)
	}
	_, err = s.ConsumeToken(ctx, "once", refuseUsed, "other", time.Now())
	if err != errUsed { // unchanged, not even wrapped
		t.Fatalf("second ConsumeToken error = %v, want the check's own error", err)
	}
}

// TestConsumeTokenCheckErrorChangesNothing: a refused redemption leaves the
// token as it was, so it can still be redeemed by the right party.
func TestConsumeTokenCheckErrorChangesNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	tok := newToken("guarded")
	if err := s.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	errWrongSecret := errors.New("wrong secret")
	var seen Token
	_, err := s.ConsumeToken(ctx, "guarded", func(t Token) error { seen = t; return errWrongSecret }, "mallory", time.Now())
	if err != errWrongSecret {
		t.Fatalf("ConsumeToken error = %v, want the check's error unchanged", err)
	}
	if !sameToken(seen, tok) {
		t.Fatalf("check saw %+v, want the stored token %+v", seen, tok)
	}
	got, err := s.GetToken(ctx, "guarded")
	if err != nil {
		t.Fatal(err)
	}
	if !sameToken(got, tok) {
		t.Fatalf("refused redemption changed the token: %+v", got)
	}
	if _, err := s.ConsumeToken(ctx, "guarded", refuseUsed, "alice", time.Now()); err != nil {
		t.Fatalf("redeeming after a refusal: %v", err)
	}
}

// TestConsumeTokenBackstop: a check that forgets to refuse used tokens still
// cannot redeem one twice.
func TestConsumeTokenBackstop(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	if err := s.CreateToken(ctx, newToken("lax")); err != nil {
		t.Fatal(err)
	}
	accept := func(Token) error { return nil }
	if _, err := s.ConsumeToken(ctx, "lax", accept, "first", time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err := s.ConsumeToken(ctx, "lax", accept, "second", time.Now())
	if !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("second ConsumeToken with a lax check error = %v, want ErrTokenUsed", err)
	}
	got, _ := s.GetToken(ctx, "lax")
	if got.UsedBy != "first" {
		t.Fatalf("token used by %q after a refused second redemption, want first", got.UsedBy)
	}
	if _, err := s.ConsumeToken(ctx, "lax", accept, "", time.Now()); err == nil {
		t.Fatalf("ConsumeToken without a connector id succeeded")
	}
	if _, err := s.ConsumeToken(ctx, "lax", accept, "c", time.Time{}); err == nil {
		t.Fatalf("ConsumeToken with a zero time succeeded (it would leave the token unused)")
	}
}

// consumeRace has n goroutines redeem token id at once, spread over stores,
// and checks that exactly one wins and the rest get the check's error.
func consumeRace(t *testing.T, stores []*JetStream, id string, n int) {
	t.Helper()
	ctx := t.Context()
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			_, errs[i] = s.ConsumeToken(ctx, id, refuseUsed, fmt.Sprintf("c%02d", i), time.Now())
		})
	}
	close(start)
	wg.Wait()

	var winners []int
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, i)
		case err != errUsed:
			t.Errorf("goroutine %d: error = %v, want the check's already-used error", i, err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("token %s redeemed by goroutines %v, want exactly one", id, winners)
	}
	winner := winners[0]
	got, err := stores[0].GetToken(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("c%02d", winner); got.UsedBy != want {
		t.Fatalf("token %s stored as used by %q, but the winner was %s", id, got.UsedBy, want)
	}
}

func TestConsumeTokenConcurrent(t *testing.T) {
	s := openStore(t, t.TempDir())
	for round := range 5 {
		id := fmt.Sprintf("race%d", round)
		if err := s.CreateToken(t.Context(), newToken(id)); err != nil {
			t.Fatal(err)
		}
		consumeRace(t, []*JetStream{s}, id, 20)
	}
}

func TestList(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	if ts, err := s.ListTokens(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("ListTokens on an empty store = %v, %v; want none", ts, err)
	}
	if cs, err := s.ListConnectors(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("ListConnectors on an empty store = %v, %v; want none", cs, err)
	}
	for _, id := range []string{"b", "c", "a"} {
		if err := s.CreateToken(ctx, newToken(id)); err != nil {
			t.Fatal(err)
		}
		if err := s.PutConnector(ctx, Connector{ID: "0" + id, Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ConsumeToken(ctx, "b", refuseUsed, "0b", time.Now()); err != nil {
		t.Fatal(err)
	}
	ts, err := s.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tk := range ts {
		ids = append(ids, tk.ID)
	}
	if strings.Join(ids, ",") != "a,b,c" {
		t.Fatalf("ListTokens ids = %v, want a,b,c (once each, ordered)", ids)
	}
	if ts[1].UsedBy != "0b" {
		t.Fatalf("ListTokens shows token b as %+v, want the used state", ts[1])
	}
	cs, err := s.ListConnectors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 || cs[0].ID != "0a" || cs[2].Name != "c" {
		t.Fatalf("ListConnectors = %+v, want 0a, 0b, 0c", cs)
	}
}

func TestPutConnectorReplaces(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	now := time.Now().Truncate(time.Second)
	c := Connector{ID: "3f9a", Name: "site-a", TokenID: "tok1", EnrolledAt: now, NotAfter: now.Add(24 * time.Hour)}
	if err := s.PutConnector(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetConnector(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !sameConnector(got, c) || got.Revoked() {
		t.Fatalf("GetConnector = %+v, want %+v", got, c)
	}
	c.RevokedAt = now.Add(time.Minute)
	if err := s.PutConnector(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetConnector(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Revoked() || !sameConnector(got, c) {
		t.Fatalf("after revocation GetConnector = %+v, want %+v", got, c)
	}
}

// PruneTokens removes tokens used or expired before the cut-off, and only
// those: a pruned token is gone (unknown), the others stay as they were.
func TestPruneTokens(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := t.Context()
	now := time.Now().Truncate(time.Second)
	mk := func(id string, expires, used time.Time) {
		tok := newToken(id)
		tok.ExpiresAt = expires
		if err := s.CreateToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if !used.IsZero() {
			if _, err := s.ConsumeToken(ctx, id, func(Token) error { return nil }, "conn-"+id, used); err != nil {
				t.Fatal(err)
			}
		}
	}
	cut := now.Add(-7 * 24 * time.Hour)
	mk("oldused", now.Add(-9*24*time.Hour), now.Add(-10*24*time.Hour))
	mk("oldexpired", now.Add(-8*24*time.Hour), time.Time{})
	mk("recentused", now.Add(time.Hour), now.Add(-time.Hour))
	mk("recentexpired", now.Add(-time.Hour), time.Time{})
	mk("live", now.Add(time.Hour), time.Time{})

	n, err := s.PruneTokens(ctx, cut)
	if err != nil || n != 2 {
		t.Fatalf("PruneTokens = %d, %v; want 2 removed", n, err)
	}
	for id, kept := range map[string]bool{"oldused": false, "oldexpired": false, "recentused": true, "recentexpired": true, "live": true} {
		_, err := s.GetToken(ctx, id)
		if kept && err != nil {
			t.Errorf("token %s: %v; want it kept", id, err)
		}
		if !kept && !errors.Is(err, ErrNotFound) {
			t.Errorf("token %s: %v; want ErrNotFound after pruning", id, err)
		}
	}
	if toks, _ := s.ListTokens(ctx); len(toks) != 3 {
		t.Errorf("ListTokens after pruning: %d tokens, want 3", len(toks))
	}
	if n, err := s.PruneTokens(ctx, cut); err != nil || n != 0 {
		t.Errorf("PruneTokens again = %d, %v; want 0", n, err)
	}
}
