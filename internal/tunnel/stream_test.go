package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/wire"
)

// accept waits up to 5s for the next stream on the connector's session.
func accept(t testing.TB, s *Session) *Stream {
	t.Helper()
	type result struct {
		st  *Stream
		err error
	}
	ch := make(chan result, 1)
	go func() { st, err := s.Accept(); ch <- result{st, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { r.st.Close() })
		return r.st
	case <-time.After(5 * time.Second):
		t.Fatal("no stream to accept within 5s")
		return nil
	}
}

// openPair opens a stream from the edge, accepts it on the connector,
// checks the header and accepts it.
func openPair(t testing.TB, edge, connector *Session, h wire.StreamOpen) (es, cs *Stream) {
	t.Helper()
	es, err := edge.Open(h)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { es.Close() })
	cs = accept(t, connector)
	got, err := cs.ReadHeader(5 * time.Second)
	if err != nil || got != h {
		t.Fatalf("ReadHeader = %+v, %v; want %+v", got, err, h)
	}
	if err := cs.Reply(wire.StreamReply{Code: wire.CodeOK}); err != nil {
		t.Fatalf("Reply: %v", err)
	}
	return es, cs
}

// noStreams waits until neither session tracks a client stream and the
// multiplexer holds none.
func noStreams(t testing.TB, sessions ...*Session) {
	t.Helper()
	for _, s := range sessions {
		eventually(t, 5*time.Second, func() bool { return s.NumStreams() == 0 && s.mux.NumStreams() == 0 },
			fmt.Sprintf("streams released (NumStreams %d, multiplexer %d)", s.NumStreams(), s.mux.NumStreams()))
	}
}

// The edge sends the client's bytes right after the header, before the
// reply; both sides send more than a window's worth at once and each
// receives the other's bytes intact.
func TestStreamCarriesBytesBothWays(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			connector, edge := sessions(t, tr.pair, Config{})
			request, response := randomBytes(3*InitialWindow+5, 1), randomBytes(2*InitialWindow+7, 2)
			h := wire.StreamOpen{Service: "db", Client: "198.51.100.7:4242"}

			es, err := edge.Open(h)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				es.Write(request)
				es.CloseWrite()
			}()
			cs := accept(t, connector)
			if got, err := cs.ReadHeader(5 * time.Second); err != nil || got != h {
				t.Fatalf("ReadHeader = %+v, %v", got, err)
			}
			if err := cs.Reply(wire.StreamReply{Code: wire.CodeOK}); err != nil {
				t.Fatal(err)
			}
			go func() {
				cs.Write(response)
				cs.CloseWrite()
			}()
			es.SetDeadline(time.Now().Add(10 * time.Second))
			cs.SetDeadline(time.Now().Add(10 * time.Second))
			gotReq := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(cs); gotReq <- b }()
			gotResp, err := io.ReadAll(es)
			if err != nil || !bytes.Equal(gotResp, response) {
				t.Fatalf("edge read %d bytes (%v), want the %d-byte response", len(gotResp), err, len(response))
			}
			if b := <-gotReq; !bytes.Equal(b, request) {
				t.Fatalf("connector read %d bytes, want the %d-byte request", len(b), len(request))
			}
			es.Close()
			cs.Close()
			noStreams(t, edge, connector)
		})
	}
}

// The client half-closes after its request; the connector reads to EOF,
// answers, and closes; the edge still receives the whole answer.
func TestStreamHalfCloseKeepsTheResponse(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			connector, edge := sessions(t, tr.pair, Config{})
			es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: "c:1"})
			request, response := []byte("SELECT 1;"), randomBytes(InitialWindow+InitialWindow/2, 3)
			if _, err := es.Write(request); err != nil {
				t.Fatal(err)
			}
			if err := es.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			cs.SetDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.ReadAll(cs); err != nil || !bytes.Equal(got, request) {
				t.Fatalf("connector read %q, %v", got, err)
			}
			go func() {
				cs.Write(response)
				cs.Close() // full close: it has read EOF, so this is no reset
			}()
			es.SetDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.ReadAll(es); err != nil || !bytes.Equal(got, response) {
				t.Fatalf("edge read %d bytes (%v) after its half-close, want the %d-byte response", len(got), err, len(response))
			}
			es.Close()
			noStreams(t, edge, connector)
		})
	}
}

// A side that has sent everything and read to EOF closes without a reset:
// its peer still reads every byte that was sent to it, then EOF.
func TestStreamNormalCloseSendsNoReset(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			connector, edge := sessions(t, tr.pair, Config{})
			es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: "c:1"})
			request := randomBytes(InitialWindow/2, 4)
			sent := make(chan struct{})
			go func() {
				es.Write(request)
				es.CloseWrite()
				close(sent)
			}()
			cs.Write([]byte("ok"))
			cs.CloseWrite()
			es.SetDeadline(time.Now().Add(10 * time.Second))
			if got, err := io.ReadAll(es); err != nil || string(got) != "ok" {
				t.Fatalf("edge read %q, %v", got, err)
			}
			within(t, 5*time.Second, sent, "the edge sends its request")
			es.Close() // done both ways; the connector has not read yet
			// A reset, were one sent, would now have arrived.
			settled(t, edge, connector)
			cs.SetDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(cs)
			if err != nil || !bytes.Equal(got, request) {
				t.Fatalf("connector read %d of %d bytes, then %v; want all of them and EOF", len(got), len(request), err)
			}
			cs.Close()
			noStreams(t, edge, connector)
		})
	}
}

func TestRefusedStream(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			connector, edge := sessions(t, tr.pair, Config{})
			es, err := edge.Open(wire.StreamOpen{Service: "nope", Client: "c:1"})
			if err != nil {
				t.Fatal(err)
			}
			es.Write([]byte("early client bytes"))
			cs := accept(t, connector)
			if _, err := cs.ReadHeader(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			reply := wire.StreamReply{Code: wire.CodeUnknownService, Reason: `service "nope" is not offered by this connector`}
			if err := cs.Reply(reply); err != nil {
				t.Fatal(err)
			}
			cs.Close()
			es.SetDeadline(time.Now().Add(5 * time.Second))
			for i := range 2 {
				n, err := es.Read(make([]byte, 10))
				var ref *wire.Refusal
				if n != 0 || !errors.As(err, &ref) || ref.Code != reply.Code || ref.Reason != reply.Reason {
					t.Fatalf("Read %d on a refused stream = %d, %v; want the refusal %+v", i+1, n, err, reply)
				}
			}
			es.Close()
			noStreams(t, edge, connector)
		})
	}
}

// When one side closes a stream whose peer is still sending, the peer's
// blocked Write and Read fail with ErrReset instead of waiting forever for
// a window nobody will open.
func TestStreamReset(t *testing.T) {
	for _, tr := range transports() {
		for _, closer := range []string{"edge", "connector"} {
			t.Run(tr.name+"/"+closer+" closes", func(t *testing.T) {
				connector, edge := sessions(t, tr.pair, Config{})
				for i := range 10 {
					es, cs := openPair(t, edge, connector, wire.StreamOpen{Service: "db", Client: fmt.Sprintf("c:%d", i)})
					closing, victim := es, cs
					if closer == "connector" {
						closing, victim = cs, es
					}
					werr, rerr := make(chan error, 1), make(chan error, 1)
					go func() {
						chunk := make([]byte, 32<<10)
						for {
							if _, err := victim.Write(chunk); err != nil {
								werr <- err
								return
							}
						}
					}()
					go func() {
						_, err := io.Copy(io.Discard, victim)
						rerr <- err
					}()
					if _, err := io.ReadFull(closing, make([]byte, 64<<10)); err != nil {
						t.Fatal(err)
					}
					closing.Close()
					for what, ch := range map[string]chan error{"Write": werr, "Read": rerr} {
						select {
						case err := <-ch:
							if !errors.Is(err, ErrReset) {
								t.Fatalf("round %d: the %s's blocked %s ended with %v, want ErrReset", i, closer, what, err)
							}
						case <-time.After(5 * time.Second):
							t.Fatalf("round %d: the peer's %s is still blocked 5s after the %s closed the stream", i, what, closer)
						}
					}
					victim.Close()
					noStreams(t, edge, connector)
				}
			})
		}
	}
}

// A client that goes away before the connector has even accepted its
// stream: the stream the connector accepts is already reset, so neither
// its Read nor a long Write (more than a window) can block.
func TestStreamResetBeforeAccept(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			connector, edge := sessions(t, tr.pair, Config{})
			es, err := edge.Open(wire.StreamOpen{Service: "db", Client: "c:1"})
			if err != nil {
				t.Fatal(err)
			}
			es.Close()
			settled(t, edge, connector) // the reset arrives before Accept
			cs := accept(t, connector)
			cs.ReadHeader(time.Second)
			cs.Reply(wire.StreamReply{Code: wire.CodeOK})
			werr, rerr := make(chan error, 1), make(chan error, 1)
			go func() { _, err := cs.Write(make([]byte, 4*MaxWindow)); werr <- err }()
			go func() { _, err := io.Copy(io.Discard, cs); rerr <- err }()
			for what, ch := range map[string]chan error{"Write": werr, "Read": rerr} {
				select {
				case err := <-ch:
					if !errors.Is(err, ErrReset) {
						t.Fatalf("%s on a stream reset before Accept = %v, want ErrReset", what, err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("%s on a stream reset before Accept is still blocked after 5s", what)
				}
			}
			cs.Close()
			noStreams(t, edge, connector)
		})
	}
}

// Many concurrent streams, each with its own payload, all arrive intact
// and each at its own stream.
func TestManyStreams(t *testing.T) {
	const n = 500
	connector, edge := sessions(t, tlsPair, Config{})
	handlers := serveStreams(connector, func(st *Stream) {
		st.SetDeadline(time.Now().Add(30 * time.Second))
		h, err := st.ReadHeader(5 * time.Second)
		if err != nil {
			return
		}
		st.Reply(wire.StreamReply{Code: wire.CodeOK})
		body, err := io.ReadAll(st)
		if err != nil {
			return
		}
		st.Write(append([]byte(h.Client+"|"), body...))
		st.CloseWrite()
	})

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprintf("192.0.2.%d:%d", i%250, 10000+i)
			payload := randomBytes(1+(i*997)%(16<<10), uint64(i))
			st, err := edge.Open(wire.StreamOpen{Service: "db", Client: client})
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			st.SetDeadline(time.Now().Add(30 * time.Second))
			go func() {
				st.Write(payload)
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if want := append([]byte(client+"|"), payload...); err != nil || !bytes.Equal(got, want) {
				errs <- fmt.Errorf("stream %d: got %d bytes (%v), want %d", i, len(got), err, len(want))
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d streams failed", failed, n)
	}
	noStreams(t, edge, connector)
	edge.Close()
	connector.Close()
	handlers.Wait()
}
