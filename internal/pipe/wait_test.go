package pipe_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/pipe"
)

// A connection that goes idle between bursts waits for its next burst
// without a buffer; every burst still arrives, in order, in both
// directions, between TCP and a connection that has no splice (so the
// copy goes through the wait-then-borrow path, not the kernel).
func TestJoinIdleBetweenBursts(t *testing.T) {
	tcpA, a := tcpPair(t)
	b, memB := memPair(t)
	res := make(chan pipe.Result, 1)
	go func() { res <- pipe.Join(a, b) }()
	for i := range 5 {
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
		time.Sleep(20 * time.Millisecond) // idle: both copies wait without a buffer
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
}
