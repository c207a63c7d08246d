package muxcompare

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// errReplyLost reports a reply that did not arrive whole after a half-close.
var errReplyLost = errors.New("reply lost after half-close")

// halfCloseCase is one way a client and a back-end end a stream: the client
// sends a request and half-closes (smux CloseWrite, yamux Close), the
// back-end reads the request to EOF or to its length, replies and
// half-closes in turn. (A case where the client half-closed after the
// back-end's FIN was dropped: it ordered the two FINs with a sleep, and
// under load smux sometimes got them the other way round.)
type halfCloseCase struct {
	name string
	// replySize is how many bytes the back-end answers.
	replySize int
	// readerBehind: the client reads only once both FINs have been
	// exchanged, as a proxy does whose outbound client is slow. Otherwise
	// the client reads the whole reply before the back-end's FIN.
	readerBehind bool
	// wantIntact tells, per library, whether the reply must arrive whole.
	wantIntact map[string]bool
}

// TestHalfClose checks that a half-closed stream still delivers the whole
// reply: the tunnel carries TCP clients that send a request, shut down
// their write side and wait for the answer (the frp issue 4967 class of bug
// loses the end of such answers).
//
// smux v1.5.56 drops whatever the stream has buffered but not yet read when
// the second of the two FINs is processed; the cases that expect it pin
// that behaviour, and if one starts passing the decision should be revisited.
func TestHalfClose(t *testing.T) {
	cases := []halfCloseCase{{
		name:       "reader keeps up, reply larger than the window",
		replySize:  3 * streamWindow,
		wantIntact: map[string]bool{"yamux": true, "yamux+coalesce": true, "smux": true},
	}, {
		name:         "reply and FIN buffered before the client reads",
		replySize:    64 << 10,
		readerBehind: true,
		wantIntact:   map[string]bool{"yamux": true, "yamux+coalesce": true, "smux": false},
	}}
	for _, lib := range benchLibs() {
		for _, tc := range cases {
			t.Run(lib.name+"/"+tc.name, func(t *testing.T) {
				err := halfClose(t, lib, tc)
				lost := errors.Is(err, errReplyLost)
				if err != nil && !lost {
					t.Fatal(err)
				}
				switch want := tc.wantIntact[lib.name]; {
				case want && lost:
					t.Fatalf("%s: %v", lib.name, err)
				case !want && !lost:
					t.Fatalf("%s delivered the whole reply, which it used to drop: revisit the tunnel's mux decision", lib.name)
				}
				t.Logf("%s: reply intact: %v (%v)", lib.name, !lost, err)
			})
		}
	}
}

// halfClose plays tc over a fresh session of lib. It returns an error
// wrapping errReplyLost if the client read EOF before the whole reply, and
// other errors for anything else that went wrong.
func halfClose(t *testing.T, lib muxLib, tc halfCloseCase) error {
	client, server := sessionPair(t, lib)
	request := []byte("GET / HTTP/1.0\r\n\r\n")
	reply := bytes.Repeat([]byte("0123456789abcdef"), tc.replySize/16)

	var wg sync.WaitGroup
	defer wg.Wait()
	// clientRead is closed once the client holds the whole reply, or gave
	// up; the back-end waits for it before its FIN unless the client is
	// meant to read behind.
	var clientRead chan struct{}
	markRead := func() {}
	if !tc.readerBehind {
		ch := make(chan struct{})
		var once sync.Once
		clientRead, markRead = ch, func() { once.Do(func() { close(ch) }) }
	}
	defer markRead()
	serverDone := make(chan error, 1) // the back-end has replied and half-closed
	wg.Go(func() {
		serverDone <- backend(server, request, reply, true, clientRead)
	})

	c, err := client.OpenStream()
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return fmt.Errorf("set client deadline: %w", err)
	}
	if _, err := c.Write(request); err != nil {
		return fmt.Errorf("client: write request: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("client: half-close after the request: %w", err)
	}
	if _, err := c.Write([]byte("late")); err == nil {
		return errors.New("client: write after the half-close succeeded; want an error")
	}

	if !tc.readerBehind {
		got := make([]byte, len(reply))
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("client: read reply while the back-end holds the stream open: %w", err)
		}
		if !bytes.Equal(got, reply) {
			return errors.New("client: reply arrived changed")
		}
		markRead()
		if err := <-serverDone; err != nil {
			return err
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			return fmt.Errorf("client: after the reply got %d more bytes and %v; want EOF", n, err)
		}
		return nil
	}

	if err := <-serverDone; err != nil {
		return err
	}
	// Both FINs are exchanged once the client session forgets the stream.
	for start := time.Now(); client.NumStreams() > 0; {
		if time.Since(start) > 5*time.Second {
			return errors.New("client session still tracks the stream 5 s after both FINs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("client: read the buffered reply: %w", err)
	}
	if !bytes.Equal(got, reply) {
		return fmt.Errorf("%w: client read %d of %d bytes, then EOF", errReplyLost, len(got), len(reply))
	}
	return nil
}

// backend accepts one stream and answers request with reply. If toEOF, it
// reads the request up to the client's half-close, else up to its length.
// It half-closes after replying, once clientRead is closed if it is not nil.
func backend(server muxSession, request, reply []byte, toEOF bool, clientRead <-chan struct{}) error {
	s, err := server.AcceptStream()
	if err != nil {
		return fmt.Errorf("back-end: accept stream: %w", err)
	}
	defer s.Close()
	if err := s.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return fmt.Errorf("set back-end deadline: %w", err)
	}
	got := make([]byte, len(request))
	if toEOF {
		got, err = io.ReadAll(s)
		if err != nil {
			return fmt.Errorf("back-end: read request to EOF after the client's half-close: %w", err)
		}
	} else if _, err := io.ReadFull(s, got); err != nil {
		return fmt.Errorf("back-end: read request: %w", err)
	}
	if !bytes.Equal(got, request) {
		return fmt.Errorf("back-end: request arrived as %q", got)
	}
	if _, err := s.Write(reply); err != nil {
		return fmt.Errorf("back-end: write reply: %w", err)
	}
	if clientRead != nil {
		<-clientRead
	}
	if err := s.CloseWrite(); err != nil {
		return fmt.Errorf("back-end: half-close after the reply: %w", err)
	}
	return nil
}

// TestCopyEndsWithoutError checks what io.Copy out of a stream returns once
// the peer has half-closed: the tunnel's copy function must treat it as a
// clean end. smux's Stream.WriteTo, which io.Copy prefers, returns io.EOF
// where the io.WriterTo contract asks for nil.
func TestCopyEndsWithoutError(t *testing.T) {
	wantErr := map[string]error{"yamux": nil, "yamux+coalesce": nil, "smux": io.EOF}
	for _, lib := range benchLibs() {
		t.Run(lib.name, func(t *testing.T) {
			client, server := sessionPair(t, lib)
			c, s, err := streamPair(client, server)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			defer s.Close()
			if _, err := s.Write(make([]byte, 100<<10)); err != nil {
				t.Fatalf("write: %v", err)
			}
			if err := s.CloseWrite(); err != nil {
				t.Fatalf("half-close: %v", err)
			}
			if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatalf("set deadline: %v", err)
			}
			n, err := io.Copy(io.Discard, c)
			if n != 100<<10 {
				t.Fatalf("io.Copy moved %d bytes, want %d", n, 100<<10)
			}
			if !errors.Is(err, wantErr[lib.name]) || (err == nil) != (wantErr[lib.name] == nil) {
				t.Fatalf("io.Copy out of a half-closed %s stream returned %v, want %v", lib.name, err, wantErr[lib.name])
			}
		})
	}
}
