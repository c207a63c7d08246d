package edge

import (
	"fmt"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/enroll"
	"github.com/sallyport/sallyport/internal/store"
	"golang.org/x/time/rate"
)

// TestCookieSessions: the edge's memory of used HTTP sessions admits a
// cookie on its host until the session ends, and a revocation is never
// undone by an older copy of the session arriving late (two edges'
// writes, or the watch after the edge's own update).
func TestCookieSessions(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	used := store.Session{ID: "0123456789abcdef", Service: "app", Host: "app.test", CookieHash: enroll.HashSecret("s3cret"),
		CreatedAt: now, UsedAt: now, ExpiresAt: now.Add(time.Minute)}
	revoked := used
	revoked.RevokedAt = now.Add(time.Second)
	unused := used
	unused.UsedAt, unused.CookieHash = time.Time{}, nil
	ws := used
	ws.Host = ""

	for _, tt := range []struct {
		name   string
		puts   []store.Session
		host   string
		cookie string
		at     time.Time
		want   bool
	}{
		{"valid", []store.Session{used}, "app.test", used.ID + ".s3cret", now, true},
		{"host compared normalized", []store.Session{used}, "APP.test.", used.ID + ".s3cret", now, true},
		{"other host", []store.Session{used}, "wiki.test", used.ID + ".s3cret", now, false},
		{"wrong secret", []store.Session{used}, "app.test", used.ID + ".s3creT", now, false},
		{"no secret", []store.Session{used}, "app.test", used.ID, now, false},
		{"unknown id", []store.Session{used}, "app.test", "fedcba9876543210.s3cret", now, false},
		{"expired", []store.Session{used}, "app.test", used.ID + ".s3cret", used.ExpiresAt, false},
		{"revoked", []store.Session{used, revoked}, "app.test", used.ID + ".s3cret", now, false},
		{"revocation not undone by an older copy", []store.Session{revoked, used}, "app.test", used.ID + ".s3cret", now, false},
		{"unused session admits nothing", []store.Session{unused}, "app.test", used.ID + ".s3cret", now, false},
		{"WebSocket session admits nothing", []store.Session{ws}, "app.test", used.ID + ".s3cret", now, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var cs cookieSessions
			for _, se := range tt.puts {
				cs.put(se, now)
			}
			id, ok := cs.check(tt.host, tt.cookie, tt.at)
			if ok != tt.want || ok && id != used.ID {
				t.Fatalf("check: %q, %v; want %v", id, ok, tt.want)
			}
		})
	}
	// Ended sessions are dropped as others come.
	var cs cookieSessions
	cs.put(used, now)
	other := used
	other.ID = "fedcba9876543210"
	cs.put(other, used.ExpiresAt)
	if _, ok := cs.byID[used.ID]; ok || len(cs.byID) != 0 {
		t.Fatalf("after expiry the memory holds %d sessions, want none", len(cs.byID))
	}
}

// BenchmarkCookiePutAt10k measures one session event (the watch's put)
// while 10,000 used HTTP sessions are live.
func BenchmarkCookiePutAt10k(b *testing.B) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var cs cookieSessions
	se := store.Session{Service: "app", Host: "app.test", CookieHash: enroll.HashSecret("s3cret"),
		CreatedAt: now, UsedAt: now, ExpiresAt: now.Add(time.Hour)}
	for i := range 10_000 {
		se.ID = fmt.Sprintf("%016x", i)
		cs.put(se, now)
	}
	i := 10_000
	for b.Loop() {
		se.ID = fmt.Sprintf("%016x", i%20_000)
		cs.put(se, now)
		i++
	}
}

// Ended sessions are dropped as time passes, each at its own expiry,
// without a walk over the live ones; a session stored again keeps one
// place in the expiry order.
func TestCookieSessionsExpireInOrder(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var cs cookieSessions
	const n = 1000
	for i := range n {
		se := store.Session{ID: fmt.Sprintf("%016x", i), Service: "app", Host: "app.test", CookieHash: enroll.HashSecret("s"),
			CreatedAt: now, UsedAt: now, ExpiresAt: now.Add(time.Duration(i+1) * time.Second)}
		cs.put(se, now)
		cs.put(se, now) // the watch bringing the edge's own write back
	}
	if len(cs.expiry) != n {
		t.Fatalf("%d entries in the expiry order for %d sessions", len(cs.expiry), n)
	}
	// Half of them have ended when the next event comes.
	cs.put(store.Session{ID: "ffffffffffffffff"}, now.Add(n/2*time.Second))
	if len(cs.byID) != n/2 || len(cs.expiry) != n/2 {
		t.Fatalf("after half the sessions ended: %d kept, %d in the expiry order; want %d", len(cs.byID), len(cs.expiry), n/2)
	}
	for id, x := range cs.byID {
		if !now.Add(n / 2 * time.Second).Before(x.expires) {
			t.Fatalf("session %s kept after its expiry %s", id, x.expires)
		}
	}
}

// TestCookieOfAnotherEdgesSession: a cookie set by another edge a moment
// ago, its session not yet brought here by the watch (here: no watch
// runs), is checked against the store once and admits its host; a wrong
// secret or another host does not. A flood of made-up cookies reads the
// store at a bounded rate: once it is spent, even a real session's cookie
// is refused (as before this lookup existed) until the rate refills.
func TestCookieOfAnotherEdgesSession(t *testing.T) {
	e, st := edgeOnStore(t)
	// The bound as configured, but refilled once an hour: the test does
	// not race the refill.
	e.cookieReads = rate.NewLimiter(rate.Every(time.Hour), cookieReadsBurst)
	now := time.Now().UTC()
	redeemed := func(id string) {
		t.Helper()
		se := store.Session{ID: id, Service: "app", Host: "app.test", SecretHash: enroll.HashSecret("link"), CookieHash: enroll.HashSecret("s3cret"),
			CreatedAt: now, UsedAt: now, UsedBy: "a client via another edge", ExpiresAt: now.Add(time.Minute)}
		if err := st.CreateSession(t.Context(), se); err != nil {
			t.Fatal(err)
		}
	}
	redeemed("0123456789abcdef")
	if id, ok := e.SessionCookie("app.test", "0123456789abcdef.s3cret"); !ok || id != "0123456789abcdef" {
		t.Fatalf("another edge's fresh session: %q, %v; want it admitted", id, ok)
	}
	if _, ok := e.SessionCookie("app.test", "0123456789abcdef.wrong"); ok {
		t.Fatal("a wrong secret admitted")
	}
	if _, ok := e.SessionCookie("wiki.test", "0123456789abcdef.s3cret"); ok {
		t.Fatal("another host admitted")
	}
	for i := range 2 * cookieReadsBurst {
		if _, ok := e.SessionCookie("app.test", fmt.Sprintf("%016x.forged", i+1)); ok {
			t.Fatal("a made-up cookie admitted")
		}
	}
	redeemed("fedcba9876543210")
	if _, ok := e.SessionCookie("app.test", "fedcba9876543210.s3cret"); ok {
		t.Fatal("after a flood of made-up cookies the store was read again at once: the reads are not bounded")
	}
}
