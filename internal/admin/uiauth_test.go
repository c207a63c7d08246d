package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A dashboard session ends after uiSessionIdle without a request, at
// uiSessionMax however busy, and at logout; the oldest goes when a login
// would pass uiMaxSessions. Its flash message is shown once.
func TestUISessionsEnd(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newUISessions(func() time.Time { return now })
	idle := s.create()
	now = now.Add(uiSessionIdle - time.Second)
	if _, ok := s.get(idle); !ok {
		t.Fatal("a session ended before its idle limit")
	}
	now = now.Add(uiSessionIdle)
	if _, ok := s.get(idle); ok {
		t.Fatal("a session outlived its idle limit")
	}

	busy := s.create()
	for range int(uiSessionMax/uiSessionIdle) * 2 {
		now = now.Add(uiSessionIdle / 2)
		s.get(busy)
	}
	if _, ok := s.get(busy); ok {
		t.Fatal("a busy session outlived the absolute limit")
	}

	gone := s.create()
	s.setFlash(gone, flash{Text: "done"})
	if sess, _ := s.get(gone); sess.flash.Text != "done" || len(sess.csrf) != 64 {
		t.Fatalf("session %+v: want its flash and a 256-bit CSRF token", sess)
	}
	if sess, _ := s.get(gone); sess.flash.Text != "" {
		t.Fatal("a flash message shown twice")
	}
	s.delete(gone)
	if _, ok := s.get(gone); ok {
		t.Fatal("a session outlived its logout")
	}

	first := s.create()
	for range uiMaxSessions {
		now = now.Add(time.Millisecond)
		s.create()
	}
	if _, ok := s.get(first); ok {
		t.Fatal("the oldest session stayed past the bound")
	}
	if n := len(s.state.m); n != uiMaxSessions {
		t.Fatalf("%d sessions held, want at most %d", n, uiMaxSessions)
	}
}

// A state-changing request must come from the dashboard's own origin, as
// the browser says in Sec-Fetch-Site or Origin.
func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		site, origin string
		ok           bool
	}{
		{"same-origin", "http://127.0.0.1:5501", true},
		{"same-origin", "null", true}, // Chromium under Referrer-Policy: no-referrer
		{"same-origin", "", true},
		{"", "http://127.0.0.1:5501", true},
		{"", "https://127.0.0.1:5501", true}, // TLS ended by a proxy that keeps the Host
		{"same-site", "http://127.0.0.1:5501", false},
		{"cross-site", "null", false},
		{"none", "", false},
		{"same-origin", "http://127.0.0.1:5502", false},
		{"", "http://evil.example", false},
		{"", "http://127.0.0.1:5501.evil.example", false},
		{"", "ftp://127.0.0.1:5501", false},
		{"", "null", false},
		{"", "", false},
	} {
		r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:5501/ui/revoke", nil)
		if tc.site != "" {
			r.Header.Set("Sec-Fetch-Site", tc.site)
		}
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if ok, why := sameOrigin(r); ok != tc.ok || !ok && why == "" {
			t.Errorf("Sec-Fetch-Site %q, Origin %q: same origin %v (%q), want %v", tc.site, tc.origin, ok, why, tc.ok)
		}
	}
}
