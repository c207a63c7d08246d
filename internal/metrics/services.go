package metrics

import (
	"sync"
	"sync/atomic"
)

// byService holds one V per configured service, and one for "" that
// stands for every other name (a label set stays bounded whatever names
// come from outside). The set only grows, when a reload configures more
// services; it is replaced whole then, and read without a lock.
type byService[V any] struct {
	mu sync.Mutex // serializes configure
	m  atomic.Pointer[map[string]V]
}

// configure adds names (and "") that the set lacks, making each one's V
// with make.
func (b *byService[V]) configure(names []string, make func(name string) V) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := map[string]V{}
	if old := b.m.Load(); old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	for _, n := range append([]string{""}, names...) {
		if _, ok := next[n]; !ok {
			next[n] = make(n)
		}
	}
	b.m.Store(&next)
}

// get returns name's V, or ""'s for a name not configured.
func (b *byService[V]) get(name string) V {
	m := *b.m.Load()
	if v, ok := m[name]; ok {
		return v
	}
	return m[""]
}

// label returns name if it is configured, else "": a name that came from
// outside (a SOCKS request, a session record, a connector's header)
// never becomes a label value of its own.
func (b *byService[V]) label(name string) string {
	if _, ok := (*b.m.Load())[name]; ok {
		return name
	}
	return ""
}
