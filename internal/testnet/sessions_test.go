package testnet_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/edge"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testnet"
)

// sessionEdge starts an edge whose https listener (0) and http listener
// (1) answer WebSockets on edge.test, with services logs (a TCP echo,
// sessions optional) and vault (a TCP echo that requires a session), both
// offered by a connector called site, and returns the back-ends.
type sessionEdge struct {
	*listenerEdge
	admin       *admin.Client
	logs, vault *testnet.Backend
	tr          *http.Transport
}

func startSessionEdge(t *testing.T) *sessionEdge {
	t.Helper()
	cs := newCerts(t, "test session CA")
	files, _, _ := cs.issue(t, "edge", false, "edge.test")
	e := startListenerEdge(t, []config.Listener{
		{Kind: config.KindHTTPS, EdgeHosts: []string{"*.edge.test", "edge.test"}, Certificates: []config.CertificateFiles{files}},
		{Kind: config.KindHTTP, EdgeHosts: []string{"edge.test"}},
	}, map[string]config.EdgeService{
		"logs":  {},
		"vault": {Policy: config.Policy{RequireSession: true}},
	})
	se := &sessionEdge{listenerEdge: e, logs: testnet.Echo(t), vault: testnet.Echo(t)}
	e.connect(t, map[string]string{"logs": se.logs.Addr(), "vault": se.vault.Addr()}, nil)
	token, err := e.AdminToken()
	if err != nil {
		t.Fatal(err)
	}
	se.admin = &admin.Client{Addr: e.AdminAddr().String(), Token: token}
	// The test resolves edge.test to the listener itself.
	https := e.addr(0)
	se.tr = &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: cs.pool, ServerName: "edge.test"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, https)
		},
	}
	t.Cleanup(se.tr.CloseIdleConnections)
	return se
}

func (se *sessionEdge) create(t *testing.T, service, ttl string) admin.Session {
	t.Helper()
	s, err := se.admin.CreateSession(context.Background(), admin.SessionRequest{Service: service, TTL: ttl})
	if err != nil {
		t.Fatalf("create session for %s: %v", service, err)
	}
	return s
}

// dial opens a WebSocket to link (whose host is edge.test) over the
// https listener, offering protocols.
func (se *sessionEdge) dial(ctx context.Context, link string, protocols ...string) (*websocket.Conn, error) {
	c, resp, err := websocket.Dial(ctx, link, &websocket.DialOptions{HTTPClient: &http.Client{Transport: se.tr}, Subprotocols: protocols})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return c, err
}

// refusedWith dials link and wants the edge to close the WebSocket with
// policy violation and reason, and nothing carried.
func (se *sessionEdge) refusedWith(t *testing.T, link, reason string, protocols ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := se.dial(ctx, link, protocols...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != reason {
		t.Fatalf("read: %v; want a close with policy violation and %q", err, reason)
	}
}

func TestSessionLinkCarriesOneClientOnce(t *testing.T) {
	se := startSessionEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := se.create(t, "logs", "")
	if !strings.HasPrefix(s.URL, "wss://edge.test:") || !strings.HasSuffix(s.URL, "/s/"+s.Token) {
		t.Fatalf("link %q: want wss://edge.test:PORT/s/<token> on the first exact edge host of the https listener", s.URL)
	}
	if d := s.ExpiresAt.Sub(s.CreatedAt); d != admin.DefaultSessionTTL {
		t.Fatalf("session lasts %s, want the default %s", d, admin.DefaultSessionTTL)
	}
	c, err := se.dial(ctx, s.URL)
	if err != nil {
		t.Fatalf("dial the link: %v", err)
	}
	data := randomBytes(1<<20, 21)
	got, err := wsRoundTrip(ctx, c, data)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("%d bytes back of %d, err %v", len(got), len(data), err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	accepted := se.logs.Accepted()

	se.refusedWith(t, s.URL, edge.SessionUsed)
	if n := se.logs.Accepted(); n != accepted {
		t.Fatalf("the back-end accepted %d connections after the reuse, want %d: a refused link reached it", n, accepted)
	}
	ss, err := se.admin.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].State != "used" || ss[0].Token != "" || ss[0].URL != "" {
		t.Fatalf("sessions list: %+v, %v; want the one session, used, without its token", ss, err)
	}
	if strings.Contains(se.Logs.String(), s.Token) || strings.Contains(se.Logs.String(), strings.Split(s.Token, ".")[2]) {
		t.Fatal("the edge logged the session's token")
	}
	wantAudit(t, se.admin, map[string]string{
		"session.create": "ok",
		"session.use":    "ok",
		"session.use/2":  "refused: " + edge.SessionUsed,
	})
}

// wantAudit waits (bounded) until the audit trail holds, for each action
// (action/N for its N-th event), an event with that result.
func wantAudit(t *testing.T, c *admin.Client, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got []store.AuditEvent
	for {
		got = got[:0]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.Audit(ctx, time.Time{}, false, func(ev store.AuditEvent) error { got = append(got, ev); return nil })
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		missing := 0
		have := map[string]bool{}
		for _, ev := range got {
			seen[ev.Action]++
			key := ev.Action
			if n := seen[ev.Action]; n > 1 {
				key += "/" + string(rune('0'+n))
			}
			have[key+"="+ev.Result] = true
		}
		for k, v := range want {
			if !have[k+"="+v] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit trail lacks %v; it has %+v", want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSessionRefusals(t *testing.T) {
	se := startSessionEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	link := se.create(t, "logs", "1m").URL
	base := link[:strings.Index(link, "/s/")] // wss://edge.test:PORT

	t.Run("revoked", func(t *testing.T) {
		s := se.create(t, "logs", "1m")
		if _, err := se.admin.RevokeSession(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
		se.refusedWith(t, s.URL, edge.SessionRevoked)
	})
	t.Run("expired", func(t *testing.T) {
		s := se.create(t, "logs", "1s")
		// Wait (bounded) for the edge itself to call it expired, reading
		// only: a use before then would be carried.
		deadline := time.Now().Add(10 * time.Second)
		for {
			ss, err := se.admin.Sessions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			expired := false
			for _, x := range ss {
				expired = expired || x.ID == s.ID && x.State == "expired"
			}
			if expired {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the session did not expire within 10s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		se.refusedWith(t, s.URL, edge.SessionExpired)
	})
	t.Run("forged", func(t *testing.T) {
		s := se.create(t, "logs", "1m")
		// The real id with another secret, a made-up id, and garbage.
		parts := strings.Split(s.Token, ".")
		other := se.create(t, "logs", "1m")
		forged := parts[0] + "." + parts[1] + "." + strings.Split(other.Token, ".")[2]
		for _, tok := range []string{forged, "ss1.0123456789abcdef." + parts[2], "garbage", url.PathEscape("ss1.%00")} {
			se.refusedWith(t, base+"/s/"+tok, edge.SessionUnknown)
		}
		se.refusedWith(t, base+"/s/", edge.SessionUnknown)
		// The forgeries wrote nothing: the real session is still unused.
		ss, _ := se.admin.Sessions(ctx)
		for _, x := range ss {
			if x.ID == s.ID && x.State != "unused" {
				t.Fatalf("session after forgeries of it: %s, want unused", x.State)
			}
		}
		c, err := se.dial(ctx, s.URL)
		if err != nil {
			t.Fatalf("the real link after forgeries: %v", err)
		}
		if got, err := wsRoundTrip(ctx, c, []byte("still mine")); err != nil || string(got) != "still mine" {
			t.Fatalf("got %q, %v", got, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
	t.Run("subprotocol", func(t *testing.T) {
		s := se.create(t, "logs", "1m")
		for _, offer := range [][]string{{s.Subprotocol}, {"sallyport.session", s.Subprotocol}} {
			if offer[0] != s.Subprotocol {
				s = se.create(t, "logs", "1m")
				offer[1] = s.Subprotocol
			}
			c, err := se.dial(ctx, base+"/s/", offer...)
			if err != nil {
				t.Fatalf("dial /s/ with %d subprotocols: %v", len(offer), err)
			}
			if want := offer[0]; c.Subprotocol() != want {
				t.Fatalf("the edge chose subprotocol %q, want %q", c.Subprotocol(), want)
			}
			if got, err := wsRoundTrip(ctx, c, []byte("by header")); err != nil || string(got) != "by header" {
				t.Fatalf("got %q, %v", got, err)
			}
			c.Close(websocket.StatusNormalClosure, "")
			se.refusedWith(t, base+"/s/", edge.SessionUsed, offer...)
		}
	})
	t.Run("require_session", func(t *testing.T) {
		accepted := se.vault.Accepted()
		se.refusedWith(t, base+"/ws/vault", "service vault is reached only through a one-time session link; ask for one")
		if se.vault.Accepted() != accepted {
			t.Fatal("a plain WebSocket reached the back-end of a service that requires a session")
		}
		s := se.create(t, "vault", "1m")
		c, err := se.dial(ctx, s.URL)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := wsRoundTrip(ctx, c, []byte("secret")); err != nil || string(got) != "secret" {
			t.Fatalf("got %q, %v", got, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
	t.Run("create", func(t *testing.T) {
		for _, tt := range []struct {
			req  admin.SessionRequest
			want string
		}{
			{admin.SessionRequest{Service: "nope"}, `no service named "nope"`},
			{admin.SessionRequest{Service: "logs", TTL: "48h"}, "ttl 48h0m0s out of range"},
			{admin.SessionRequest{Service: "logs", TTL: "soon"}, `bad ttl "soon"`},
			{admin.SessionRequest{Service: "logs", Connector: "elsewhere"}, "no connector named elsewhere is enrolled"},
		} {
			if _, err := se.admin.CreateSession(ctx, tt.req); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("create %+v: %v, want %q", tt.req, err, tt.want)
			}
		}
		s, err := se.admin.CreateSession(ctx, admin.SessionRequest{Service: "logs", Connector: "site"})
		if err != nil {
			t.Fatal(err)
		}
		c, err := se.dial(ctx, s.URL)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := wsRoundTrip(ctx, c, []byte("on site")); err != nil || string(got) != "on site" {
			t.Fatalf("got %q, %v", got, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
	wantAudit(t, se.admin, map[string]string{"session.revoke": "ok"})
}

// TestSessionRace: many clients present one link at once; exactly one is
// carried and every other is told the link was used.
func TestSessionRace(t *testing.T) {
	se := startSessionEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := se.create(t, "logs", "1m")
	const clients = 16
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		carried int
		used    int
		other   []error
	)
	start := make(chan struct{})
	for range clients {
		wg.Go(func() {
			<-start
			c, err := se.dial(ctx, s.URL)
			if err != nil {
				mu.Lock()
				other = append(other, err)
				mu.Unlock()
				return
			}
			defer c.CloseNow()
			got, err := wsRoundTrip(ctx, c, []byte("mine"))
			mu.Lock()
			defer mu.Unlock()
			var ce websocket.CloseError
			switch {
			case err == nil && string(got) == "mine":
				carried++
			case errors.As(err, &ce) && ce.Reason == edge.SessionUsed:
				used++
			default:
				other = append(other, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if carried != 1 || used != clients-1 || len(other) > 0 {
		t.Fatalf("%d carried, %d told the link was used, others %v; want 1 and %d", carried, used, other, clients-1)
	}
}

// TestRevokedSessionEndsItsConnection: revoking a WebSocket session that
// is in use ends its connection: the client gets a close with policy
// violation and "session revoked", and the back-end's connection closes;
// the session lists as revoked. (Before, a used session could not be
// revoked: its connection went on for as long as the client kept it.)
func TestRevokedSessionEndsItsConnection(t *testing.T) {
	se := startSessionEdge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := se.create(t, "logs", "")
	c, err := se.dial(ctx, s.URL)
	if err != nil {
		t.Fatalf("dial the link: %v", err)
	}
	defer c.CloseNow()
	if got, err := wsRoundTrip(ctx, c, []byte("before")); err != nil || string(got) != "before" {
		t.Fatalf("through the session: %q, %v", got, err)
	}
	if _, err := se.admin.RevokeSession(ctx, s.ID); err != nil {
		t.Fatalf("revoke the used session: %v", err)
	}
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, edge.SessionRevoked) {
		t.Fatalf("after the revocation the client read %v; want a close with policy violation and %q", err, edge.SessionRevoked)
	}
	se.logs.WaitOpen(t, 0, 10*time.Second)
	ss, err := se.admin.Sessions(ctx)
	if err != nil || len(ss) != 1 || ss[0].State != "revoked" {
		t.Fatalf("sessions list: %+v, %v; want the one session, revoked", ss, err)
	}
	wantAudit(t, se.admin, map[string]string{"session.use": "ok", "session.revoke": "ok"})
}
