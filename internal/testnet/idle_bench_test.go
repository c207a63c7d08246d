package testnet_test

import (
	"net"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testnet"
)

// BenchmarkIdleConnection measures what an idle tunneled connection costs
// edge and connector together, in one process: goroutine stacks, heap and
// goroutines per connection, over and above the same connections made
// directly to the same echo back-end. (sallyport bench measures RSS with
// edge and connector in processes of their own; this isolates the Go
// memory, for profiling one change at a time.)
func BenchmarkIdleConnection(b *testing.B) {
	const n = 2000
	echo := testnet.Echo(b)
	e := testnet.StartEdge(b, testnet.EdgeOptions{Expose: map[string]string{"echo": ""}})
	c := testnet.StartConnector(b, e.Keyfile(b, "site-a", time.Hour), testnet.ConnectorOptions{Services: map[string]string{"echo": echo.Addr()}})
	c.WaitTunnels(b, 1)
	e.WaitRoutes(b, "echo", 1, 10*time.Second)
	tunneled := e.ServiceAddr("echo").String()

	for b.Loop() {
		direct := idleCost(b, echo.Addr(), n)
		through := idleCost(b, tunneled, n)
		b.ReportMetric((through.stack-direct.stack)/n, "stack-B/conn")
		b.ReportMetric((through.heap-direct.heap)/n, "heap-B/conn")
		b.ReportMetric((through.goroutines-direct.goroutines)/n, "goroutines/conn")
	}
}

type memCost struct{ stack, heap, goroutines float64 }

// idleCost opens n connections to addr, has each carry one byte both ways,
// and returns what the process holds more than before, once collected.
func idleCost(b *testing.B, addr string, n int) memCost {
	b.Helper()
	before := sampleMem()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	one := make([]byte, 1)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(one); err != nil {
			b.Fatal(err)
		}
	}
	after := sampleMem()
	return memCost{after.stack - before.stack, after.heap - before.heap, after.goroutines - before.goroutines}
}

func sampleMem() memCost {
	// Two collections: the first frees, the second shrinks idle stacks
	// further, as a long-running process's repeated collections do.
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(s)
	return memCost{float64(s[0].Value.Uint64()), float64(s[1].Value.Uint64()), float64(s[2].Value.Uint64())}
}
