package samplelog

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

func TestLogTailsFromConnectAndStops(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Log{Interval: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { g.Serve(ctx, l) })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	var first, prev int64
	for i := range 3 {
		s, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		var at string
		if _, err := fmt.Sscanf(s, "log line %d at %s\n", &n, &at); err != nil {
			t.Fatalf("line %q: %v", s, err)
		}
		if i == 0 {
			first = n
		} else if n != prev+1 {
			t.Fatalf("line %d after %d", n, prev)
		}
		prev = n
	}
	if first < 1 || g.Count() < prev {
		t.Fatalf("first line %d, count %d after line %d", first, g.Count(), prev)
	}
	cancel()
	wg.Wait()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := r.ReadString('\n'); err != nil {
			break // closed by Serve's end
		}
	}
}
