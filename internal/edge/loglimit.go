package edge

import (
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/admission"
)

// refusalLinesPerSecond is how many refusals of one reason are logged in
// one second; the rest are counted (status shows every one) and the next
// line logged for that reason says how many went unlogged. A flood of
// refusals then writes a few lines a second, not one per connection.
const refusalLinesPerSecond = 10

// lineLimit decides which refusals are logged, per reason. The zero value
// is ready; it is safe for concurrent use.
type lineLimit struct {
	state struct {
		sync.Mutex
		windows map[admission.Reason]*lineWindow
	}
}

type lineWindow struct {
	start  time.Time
	lines  int // logged in this window
	unsaid int // not logged since the last line
}

// allow reports whether a refusal for r at now is logged, and how many of
// r's were not logged since its last line.
func (l *lineLimit) allow(r admission.Reason, now time.Time) (bool, int) {
	l.state.Lock()
	defer l.state.Unlock()
	if l.state.windows == nil {
		l.state.windows = make(map[admission.Reason]*lineWindow)
	}
	w := l.state.windows[r]
	if w == nil {
		w = &lineWindow{}
		l.state.windows[r] = w
	}
	if now.Sub(w.start) >= time.Second {
		w.start, w.lines = now, 0
	}
	if w.lines >= refusalLinesPerSecond {
		w.unsaid++
		return false, 0
	}
	w.lines++
	unsaid := w.unsaid
	w.unsaid = 0
	return true, unsaid
}
