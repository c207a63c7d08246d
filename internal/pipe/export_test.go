package pipe

import (
	"net"
	"time"
)

// StartLingering is Start with copiers that wait d for more bytes before
// they leave their source armed (Start's wait is linger).
func StartLingering(d time.Duration, a, b net.Conn, done func(Result)) *Exchange {
	return start(a, b, done, d)
}

// Resting reports how many directions of x rest: no copier runs for
// them, and their source is armed (in the process's poller, or by
// NotifyRead) to start one when it becomes readable.
func (x *Exchange) Resting() int {
	n := 0
	for _, w := range x.j.watches {
		if w == nil {
			continue
		}
		w.state.Lock()
		if w.state.phase == watchIdle && w.state.armed {
			n++
		}
		w.state.Unlock()
	}
	return n
}
