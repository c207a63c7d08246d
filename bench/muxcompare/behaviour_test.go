package muxcompare

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xtaci/smux"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestHeadOfLine checks whether a stream can still move 10 MiB while other
// streams of the same session have readers that stopped reading.
//
// The tunnel requires it: one client that stops reading must not freeze
// every other client of the same connector. The cases that are expected to
// stall pin why the tunnel's configuration is what it is; if one of them
// starts passing, the library changed and the decision should be revisited.
func TestHeadOfLine(t *testing.T) {
	smuxV1 := smuxConfig()
	smuxV1.Version = 1
	smuxV1.MaxStreamBuffer = smuxV1.MaxReceiveBuffer
	smuxDefaultBuffer := smuxConfig()
	smuxDefaultBuffer.MaxReceiveBuffer = smux.DefaultConfig().MaxReceiveBuffer // 4 MiB

	cases := []struct {
		name    string
		lib     muxLib
		stalled int
		// wantMoves tells whether the healthy stream must get through.
		wantMoves bool
	}{
		{"yamux/1 stalled", muxLib{"yamux", startYamux(yamuxConfig())}, 1, true},
		{"smux v2/1 stalled", muxLib{"smux", startSmux(smuxConfig())}, 1, true},
		{"yamux/16 stalled", muxLib{"yamux", startYamux(yamuxConfig())}, 16, true},
		{"smux v2/16 stalled", muxLib{"smux", startSmux(smuxConfig())}, 16, true},
		{"yamux+coalesce/16 stalled", muxLib{"yamux+coalesce", startYamuxCoalesced(yamuxConfig())}, 16, true},
		// Each stalled smux stream holds up to MaxStreamBuffer of the
		// session's MaxReceiveBuffer; once stalled streams hold all of it,
		// the session stops reading its connection and every stream
		// stops. Here 8 stalled streams of 1 MiB exhaust the 4 MiB default;
		// with the proposed 64 MiB it takes 64 of them.
		{"smux v2 4 MiB session buffer/8 stalled", muxLib{"smux", startSmux(smuxDefaultBuffer)}, 8, false},
		// Version 1 has no per-stream window: one stalled reader takes the
		// whole session buffer.
		{"smux v1/1 stalled", muxLib{"smux", startSmux(smuxV1)}, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.wantMoves {
				// These wait out a stall: let them wait together, after
				// the transfers that must finish have had the machine.
				t.Parallel()
			}
			// An expected stall is told apart in 2 s; a required transfer
			// of 10 MiB over loopback gets 10 s even on a loaded machine.
			timeout := 10 * time.Second
			if !tc.wantMoves {
				timeout = 2 * time.Second
			}
			moved, err := headOfLine(t, tc.lib, tc.stalled, timeout)
			switch {
			case tc.wantMoves && !moved:
				t.Fatalf("healthy stream could not move 10 MiB past %d stalled streams: %v", tc.stalled, err)
			case !tc.wantMoves && moved:
				t.Fatalf("healthy stream moved 10 MiB past %d stalled streams, which this configuration used to block: revisit the tunnel's mux decision", tc.stalled)
			}
			t.Logf("%s: healthy stream moved 10 MiB past %d stalled readers: %v (%v)", tc.lib.name, tc.stalled, moved, err)
		})
	}
}

// headOfLine fills stalled streams whose readers never read, then tries to
// move 10 MiB over one more stream of the same session, opened beforehand.
// It reports whether the transfer completed within timeout, and if not, the
// error that ended it.
func headOfLine(t *testing.T, lib muxLib, stalled int, timeout time.Duration) (moved bool, err error) {
	const healthyBytes = 10 << 20
	client, server := sessionPair(t, lib)

	var wg sync.WaitGroup
	// The sessions close before the writers are waited for: that is what
	// unblocks a writer stuck on a full window.
	defer wg.Wait()
	defer client.Close()
	defer server.Close()

	// Every stream is opened before the first stall: a stalled session
	// would not even open new streams.
	c, s, err := streamPair(client, server)
	if err != nil {
		t.Fatalf("open healthy stream: %v", err)
	}
	stalledWriters := make([]muxStream, stalled)
	// The accepted ends are never read again. They stay referenced: smux
	// closes an accepted stream that is garbage collected.
	stalledReaders := make([]muxStream, stalled)
	defer runtime.KeepAlive(stalledReaders)
	for i := range stalledWriters {
		stalledWriters[i], stalledReaders[i], err = streamPair(client, server)
		if err != nil {
			t.Fatalf("open stalled stream %d: %v", i, err)
		}
	}

	var written atomic.Int64
	for _, c := range stalledWriters {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Write(buf)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}
	// Wait until the stalled writers are blocked: nothing written for 300 ms.
	for last, quiet, start := int64(-1), 0, time.Now(); quiet < 3 && time.Since(start) < 5*time.Second; {
		time.Sleep(100 * time.Millisecond)
		if now := written.Load(); now == last {
			quiet++
		} else {
			last, quiet = now, 0
		}
	}
	t.Logf("stalled writers blocked after %d KiB in total", written.Load()>>10)

	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for sent := 0; sent < healthyBytes; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	if err := s.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatalf("set read deadline: %v", err)
	}
	if err := readN(s, healthyBytes, make([]byte, 64<<10)); err != nil {
		return false, err
	}
	return true, nil
}

// Compile-time checks that both candidates' streams are what the tunnel's
// copy function needs.
var (
	_ muxStream = (*smux.Stream)(nil)
	_ muxStream = yamuxStream{}
)
