// Package samplelog is a sample back-end for demos and tests: a log that
// grows by one numbered, timestamped line every interval, tailed by each
// TCP connection from the moment it connects.
package samplelog

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// Log writes line n ("log line 42 at 04:31:07.200") to every connected
// client, every Interval, until Serve's context ends.
type Log struct {
	Interval time.Duration

	// mu guards the fields below.
	mu      sync.Mutex
	n       int64
	clients map[net.Conn]struct{}
}

// Count is the number of the last line written (0 before the first).
func (g *Log) Count() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// Serve accepts clients on l and writes the log to them until ctx ends;
// it closes l and every client, and returns when all is done. A client
// that does not take a line within an Interval is dropped.
func (g *Log) Serve(ctx context.Context, l net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	wg.Go(func() { g.tick(ctx) })
	for {
		c, err := l.Accept()
		if err != nil {
			l.Close()
			return
		}
		g.mu.Lock()
		if ctx.Err() != nil {
			g.mu.Unlock()
			c.Close()
			continue
		}
		if g.clients == nil {
			g.clients = map[net.Conn]struct{}{}
		}
		g.clients[c] = struct{}{}
		g.mu.Unlock()
	}
}

// tick writes a line every Interval and, when ctx ends, closes the clients.
func (g *Log) tick(ctx context.Context) {
	t := time.NewTicker(g.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			g.mu.Lock()
			for c := range g.clients {
				c.Close()
				delete(g.clients, c)
			}
			g.mu.Unlock()
			return
		case now := <-t.C:
			g.mu.Lock()
			g.n++
			line := fmt.Sprintf("log line %d at %s\n", g.n, now.Format("15:04:05.000"))
			for c := range g.clients {
				c.SetWriteDeadline(now.Add(g.Interval))
				if _, err := c.Write([]byte(line)); err != nil {
					c.Close()
					delete(g.clients, c)
				}
			}
			g.mu.Unlock()
		}
	}
}
