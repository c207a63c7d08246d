package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/loopback"
	"github.com/sallyport/sallyport/internal/wire"
)

func TestHandshake(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, e := tr.pair(t)
			connector, edge, hello, welcome := handshake(t, c, e, Config{})
			if !reflect.DeepEqual(hello, testHello) {
				t.Errorf("edge received hello %+v, want %+v", hello, testHello)
			}
			if !reflect.DeepEqual(welcome, testWelcome) {
				t.Errorf("connector received welcome %+v, want %+v", welcome, testWelcome)
			}
			for _, s := range []*Session{connector, edge} {
				if s.IsClosed() || s.NumStreams() != 0 || s.RemoteAddr() == nil {
					t.Errorf("new session: closed %v, %d streams, remote %v", s.IsClosed(), s.NumStreams(), s.RemoteAddr())
				}
			}
		})
	}
}

func TestHandshakeRefusal(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, e := tr.pair(t)
			errc := make(chan error, 1)
			go func() {
				_, _, err := Client(context.Background(), c, testHello, Config{})
				errc <- err
			}()
			if _, _, err := ReadOpening(context.Background(), e, Config{}); err != nil {
				t.Fatal(err)
			}
			sent := &wire.Refusal{Code: wire.CodeRevoked, Reason: "connector site-a was revoked; enroll it again"}
			if err := Refuse(e, sent); err != nil {
				t.Fatalf("Refuse: %v", err)
			}
			err := <-errc
			var ref *wire.Refusal
			if !errors.As(err, &ref) || *ref != *sent {
				t.Fatalf("Client = %v, want the refusal %+v", err, sent)
			}
			if _, err := c.Write([]byte("x")); err == nil {
				t.Fatal("Client left its connection open after a refusal")
			}
		})
	}
}

// Each side reports the other's version, whatever that version does after
// its preamble. The peer here is built from package wire by hand.
func TestVersionMismatch(t *testing.T) {
	const other = wire.Version + 1
	fakePeer := func(conn net.Conn) <-chan error {
		errc := make(chan error, 1)
		go func() {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			go wire.WritePreamble(conn, other)
			errc <- wire.ReadPreamble(conn, other)
		}()
		return errc
	}
	check := func(t *testing.T, err error, local, remote uint16) {
		t.Helper()
		var ve *wire.VersionError
		if !errors.As(err, &ve) || ve.Local != local || ve.Remote != remote {
			t.Fatalf("error %v, want a VersionError local %d remote %d", err, local, remote)
		}
	}
	for _, tr := range transports() {
		t.Run(tr.name+"/connector", func(t *testing.T) {
			c, e := tr.pair(t)
			peer := fakePeer(e)
			_, _, err := Client(context.Background(), c, testHello, Config{HandshakeTimeout: 5 * time.Second})
			check(t, err, wire.Version, other)
			check(t, <-peer, other, wire.Version)
		})
		t.Run(tr.name+"/edge", func(t *testing.T) {
			c, e := tr.pair(t)
			peer := fakePeer(c)
			_, _, err := ReadOpening(context.Background(), e, Config{HandshakeTimeout: 5 * time.Second})
			check(t, err, wire.Version, other)
			check(t, <-peer, other, wire.Version)
		})
	}
}

// A peer that connects and then says nothing cannot hold a handshake
// longer than HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	cfg := Config{HandshakeTimeout: 200 * time.Millisecond}
	roles := []struct {
		name string
		run  func(c, e net.Conn) (net.Conn, error) // returns the conn under test
	}{
		{"Client", func(c, e net.Conn) (net.Conn, error) {
			_, _, err := Client(context.Background(), c, testHello, cfg)
			return c, err
		}},
		{"ReadOpening", func(c, e net.Conn) (net.Conn, error) {
			_, _, err := ReadOpening(context.Background(), e, cfg)
			return e, err
		}},
		{"Server", func(c, e net.Conn) (net.Conn, error) {
			_, err := Server(e, cfg, testWelcome)
			return e, err
		}},
	}
	for _, tr := range transports() {
		for _, role := range roles {
			t.Run(tr.name+"/"+role.name, func(t *testing.T) {
				c, e := tr.pair(t)
				done := make(chan struct{})
				var err error
				var conn net.Conn
				go func() { conn, err = role.run(c, e); close(done) }()
				within(t, 5*time.Second, done, role.name+" with a silent peer returns")
				if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%s = %v, want a timeout", role.name, err)
				}
				if role.name != "ReadOpening" { // ReadOpening leaves conn to its caller
					conn.SetDeadline(time.Now().Add(time.Second))
					if _, err := conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
						t.Fatalf("%s left its connection open after a failed handshake: write = %v", role.name, err)
					}
				}
			})
		}
	}
}

func TestHandshakeCancel(t *testing.T) {
	cfg := Config{HandshakeTimeout: time.Minute}
	for _, tr := range transports() {
		for _, role := range []string{"Client", "ReadOpening"} {
			t.Run(tr.name+"/"+role, func(t *testing.T) {
				c, e := tr.pair(t)
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(100*time.Millisecond, cancel)
				done := make(chan struct{})
				var err error
				go func() {
					if role == "Client" {
						_, _, err = Client(ctx, c, testHello, cfg)
					} else {
						_, _, err = ReadOpening(ctx, e, cfg)
					}
					close(done)
				}()
				within(t, 5*time.Second, done, role+" returns after its context is canceled")
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("%s = %v, want context.Canceled", role, err)
				}
			})
		}
	}
}

// A frame the multiplexer cannot parse ends the session on both sides.
func TestGarbageFrameEndsSession(t *testing.T) {
	for _, tr := range transports() {
		for _, from := range []string{"connector", "edge"} {
			t.Run(tr.name+"/from "+from, func(t *testing.T) {
				connector, edge := sessions(t, tr.pair, Config{})
				bad := connector
				if from == "edge" {
					bad = edge
				}
				// A frame of protocol version 0x7f, written whole between
				// the multiplexer's own. The write may fail: the peer can
				// end the session first.
				bad.conn.Write(append([]byte{0x7f}, muxFrame(muxTypeData, 0, 1, 0)[1:]...))
				within(t, 5*time.Second, edge.Done(), "the edge session ends")
				within(t, 5*time.Second, connector.Done(), "the connector session ends")
				if _, err := edge.Open(wire.StreamOpen{Service: "db"}); !errors.Is(err, ErrClosed) {
					t.Fatalf("Open on an ended session = %v, want ErrClosed", err)
				}
				if _, err := connector.Accept(); !errors.Is(err, ErrClosed) {
					t.Fatalf("Accept on an ended session = %v, want ErrClosed", err)
				}
			})
		}
	}
}

// A tunnel whose link goes silent (no FIN, no RST, bytes vanish) ends on
// both sides within about KeepaliveTimeout; an idle but healthy one does not.
func TestKeepaliveEndsASilentSession(t *testing.T) {
	cfg := Config{KeepaliveInterval: 100 * time.Millisecond, KeepaliveTimeout: 500 * time.Millisecond}
	var r *loopback.Relay
	c, e := tlsPairVia(t, func(target string) string {
		r = loopback.StartRelay(t, target)
		return r.Addr()
	})
	connector, edge, _, _ := handshake(t, c, e, cfg)

	// Nothing is to happen here: watch for three timeouts' worth.
	select {
	case <-connector.Done():
		t.Fatal("an idle, healthy tunnel ended on the connector's side")
	case <-edge.Done():
		t.Fatal("an idle, healthy tunnel ended on the edge's side")
	case <-time.After(3 * cfg.KeepaliveTimeout):
	}

	r.Freeze()
	start := time.Now()
	// The bound is a configured behaviour, not a speed: allow slack for
	// a loaded machine, but not a missing keepalive.
	within(t, 10*cfg.KeepaliveTimeout, connector.Done(), "the connector notices the silent tunnel")
	within(t, 10*cfg.KeepaliveTimeout, edge.Done(), "the edge notices the silent tunnel")
	t.Logf("silent tunnel ended on both sides after %s (keepalive timeout %s)", time.Since(start).Round(time.Millisecond), cfg.KeepaliveTimeout)
}

// A zero Config means the protocol's defaults; a Config whose keepalive
// timeout does not exceed its interval is refused, with both values named,
// instead of being quietly changed into another one.
func TestConfigDefaultsAndRefusals(t *testing.T) {
	got, err := Config{}.resolve()
	want := Config{KeepaliveInterval: wire.DefaultKeepaliveInterval, KeepaliveTimeout: wire.DefaultKeepaliveTimeout, HandshakeTimeout: defaultHandshakeTimeout,
		ReceiveBudget: DefaultReceiveBudget}
	if err != nil || got != want {
		t.Errorf("zero Config = %+v, %v; want %+v", got, err, want)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{KeepaliveInterval: 2 * time.Second, KeepaliveTimeout: time.Second}, "keepalive timeout (1s) must be longer than the keepalive interval (2s)"},
		{Config{KeepaliveInterval: 15 * time.Second}, "keepalive timeout (15s) must be longer than the keepalive interval (15s)"},
		{Config{KeepaliveTimeout: 3 * time.Second}, "keepalive timeout (3s) must be longer than the keepalive interval (5s)"},
		{Config{HandshakeTimeout: -time.Second}, "negative duration"},
		{Config{ReceiveBudget: -1}, "negative receive budget"},
	} {
		c, e := memPair(t)
		_, _, err := Client(context.Background(), c, testHello, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Client with %+v = %v, want an error saying %q", tc.cfg, err, tc.want)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("Client with %+v left its connection open: write = %v", tc.cfg, err)
		}
		if _, err := Server(e, tc.cfg, testWelcome); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Server with %+v = %v, want an error saying %q", tc.cfg, err, tc.want)
		}
		if _, _, err := ReadOpening(context.Background(), e, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ReadOpening with %+v = %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
}

// Session.Close ends every stream on both sides, even one whose Read is
// blocked, and is idempotent.
func TestSessionCloseClosesEveryStream(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			connector, edge := sessions(t, tr.pair, Config{})
			var streams []*Stream
			for i := range 3 {
				es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: fmt.Sprintf("10.0.0.%d:1", i)})
				streams = append(streams, es, cs)
			}
			before := blockedIn("internal/mux.(*Stream).Read(")
			errs := make(chan error, len(streams))
			for _, s := range streams {
				go func() { _, err := s.Read(make([]byte, 1)); errs <- err }()
			}
			eventually(t, 5*time.Second, func() bool { return blockedIn("internal/mux.(*Stream).Read(") >= before+len(streams) }, "every Read blocks")
			if err := edge.Close(); err != nil {
				t.Fatal(err)
			}
			if err := edge.Close(); err != nil {
				t.Fatalf("second Close = %v", err)
			}
			for range streams {
				select {
				case err := <-errs:
					if !errors.Is(err, ErrClosed) {
						t.Fatalf("a blocked Read on a closed session returned %v, want ErrClosed (a clean EOF would pass a cut-off response for a complete one)", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a blocked Read is still blocked 5s after Session.Close")
				}
			}
			for _, s := range streams {
				if _, err := s.Write([]byte("x")); !errors.Is(err, ErrClosed) {
					t.Fatalf("Write on a stream of a closed session = %v, want ErrClosed", err)
				}
				s.Close()
			}
			within(t, 5*time.Second, connector.Done(), "the peer session ends")
		})
	}
}
