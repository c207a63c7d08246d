package pipe_test

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// A connection that goes idle between bursts waits for its next burst
// without a buffer; every burst still arrives, in order, in both
// directions, between TCP and a connection that has no splice (so the
// copy goes through the wait-then-borrow path, not the kernel). The TCP
// source waits either in its lingering copier (parked in the runtime's
// poller) or, after the linger, at rest (armed in sallyport's poller).
func TestJoinIdleBetweenBursts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linger time.Duration
		rest   bool // wait until the TCP source rests before each burst
	}{
		{"lingering copier", time.Hour, false},
		{"resting source", time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tcpA, memB, x, res := started(t, tc.linger)
			for i := range 5 {
				if tc.rest {
					awaitResting(t, x, 1)
				}
				up, down := randomBytes(40<<10+i, uint64(i)), randomBytes(70<<10+i, uint64(100+i))
				tcpA.SetDeadline(time.Now().Add(10 * time.Second))
				memB.SetDeadline(time.Now().Add(10 * time.Second))
				go tcpA.Write(up)
				got := make([]byte, len(up))
				if _, err := io.ReadFull(memB, got); err != nil || !bytes.Equal(got, up) {
					t.Fatalf("burst %d: B read %v, bytes equal %v", i, err, bytes.Equal(got, up))
				}
				go memB.Write(down)
				got = make([]byte, len(down))
				if _, err := io.ReadFull(tcpA, got); err != nil || !bytes.Equal(got, down) {
					t.Fatalf("burst %d: A read %v, bytes equal %v", i, err, bytes.Equal(got, down))
				}
			}
			if tc.rest {
				awaitResting(t, x, 1)
			}
			tcpA.CloseWrite()
			if n, err := memB.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after A's half-close B read %d, %v; want EOF", n, err)
			}
			memB.Close()
			r := wait(t, res)
			if want := int64(5*(40<<10) + 10); r.AToB != want {
				t.Errorf("Result.AToB = %d, want %d", r.AToB, want)
			}
		})
	}
}
