// Package loglimit bounds how many lines a repeated event writes: at most
// Lines per Period for each key, the rest counted, so that the next line
// written for a key can say how many went unlogged. A flood of refusals
// then writes a few lines a second, not one per connection.
//
//	var l loglimit.Limiter // or loglimit.Limiter{Lines: 10}
//	if ok, unsaid := l.Allow(reason, time.Now()); ok {
//		log.Warn("client refused", "reason", reason, "more_unlogged", unsaid)
//	}
package loglimit

import (
	"sync"
	"time"
)

// Limiter decides which events of each key are logged. Lines is how many
// per Period (zero: 1); Period is one second when zero. The zero value is
// ready; it is safe for concurrent use.
type Limiter struct {
	Lines  int
	Period time.Duration

	state struct {
		sync.Mutex
		windows map[any]*window
	}
}

type window struct {
	start  time.Time
	lines  int // logged in this window
	unsaid int // not logged since the last line
}

// Allow reports whether an event of key at now is logged, and how many of
// key's were not logged since its last line.
func (l *Limiter) Allow(key any, now time.Time) (ok bool, unsaid int) {
	lines, period := max(l.Lines, 1), l.Period
	if period <= 0 {
		period = time.Second
	}
	l.state.Lock()
	defer l.state.Unlock()
	if l.state.windows == nil {
		l.state.windows = make(map[any]*window)
	}
	w := l.state.windows[key]
	if w == nil {
		w = &window{}
		l.state.windows[key] = w
	}
	if now.Sub(w.start) >= period {
		w.start, w.lines = now, 0
	}
	if w.lines >= lines {
		w.unsaid++
		return false, 0
	}
	w.lines++
	unsaid, w.unsaid = w.unsaid, 0
	return true, unsaid
}
