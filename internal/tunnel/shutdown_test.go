package tunnel

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/sallyport/sallyport/internal/wire"
)

// A session ended on purpose right after its last stream finished leaves
// the peer the stream's whole reply and a clean end; one that just dies
// leaves a cut-off stream failing with ErrClosed instead.
func TestShutdownKeepsFinishedStreamsWhole(t *testing.T) {
	for _, tc := range []struct {
		name    string
		end     func(*Session) error
		wantErr error
	}{
		{"shutdown", (*Session).Shutdown, nil},
		{"close", (*Session).Close, ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			connector, edge := sessions(t, tlsPair, Config{})
			st, err := edge.Open(wire.StreamOpen{Service: "svc", Client: "198.18.0.1:1"})
			if err != nil {
				t.Fatal(err)
			}
			acc, err := connector.Accept()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := acc.ReadHeader(5e9); err != nil {
				t.Fatal(err)
			}
			reply := randomBytes(200<<10, 3)
			acc.Reply(wire.StreamReply{Code: wire.CodeOK})
			acc.Write(reply)
			acc.CloseWrite()
			// The edge has read nothing yet when the connector ends the session.
			tc.end(connector)
			got, err := io.ReadAll(st)
			switch {
			case err == nil && !bytes.Equal(got, reply):
				// Never a cut-off stream that ends as if complete.
				t.Fatalf("read after %s: a clean end after %d bytes of the %d-byte reply", tc.name, len(got), len(reply))
			case err == nil && tc.wantErr != nil:
				// Close drops what is still gathered for writing; a busy
				// machine may have sent it all, FIN included, first.
				t.Logf("read after %s: the whole reply had left before the close", tc.name)
			case err != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("read after %s: %d bytes, err %v; want err %v", tc.name, len(got), err, tc.wantErr)
			}
			st.Close()
			acc.Close()
		})
	}
}
