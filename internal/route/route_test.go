package route

import (
	"fmt"
	"slices"
	"testing"
)

func TestPickSpreadsAndRemoveForgets(t *testing.T) {
	var tb Table[string]
	if _, ok := tb.Pick("db", nil); ok {
		t.Fatal("empty table picked a tunnel")
	}
	tb.Add("a", []string{"db", "web"})
	tb.Add("b", []string{"db"})
	tb.Add("b", []string{"db"}) // idempotent
	seen := map[string]int{}
	for range 10 {
		got, ok := tb.Pick("db", nil)
		if !ok {
			t.Fatal("no tunnel for db")
		}
		seen[got]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("picks not spread evenly over replicas: %v", seen)
	}
	if !tb.Remove("a") {
		t.Fatal("Remove(a) reported a missing tunnel")
	}
	for range 3 {
		if got, _ := tb.Pick("db", nil); got != "b" {
			t.Fatalf("picked %q after its removal", got)
		}
	}
	if _, ok := tb.Pick("web", nil); ok {
		t.Fatal("web still routed after its only tunnel left")
	}
	if tb.Remove("a") {
		t.Fatal("second Remove(a) found it again")
	}
	if c := tb.Count(); len(c) != 1 || c[0] != (ServiceCount{"db", 1}) {
		t.Fatalf("Count = %v", c)
	}
}

// Set leaves a tunnel offering exactly what it is given, and says what
// changed; other tunnels keep their services.
func TestSet(t *testing.T) {
	var tb Table[string]
	tb.Add("a", []string{"db", "web"})
	tb.Add("b", []string{"db"})
	added, removed := tb.Set("a", []string{"web", "wiki"})
	if !slices.Equal(added, []string{"wiki"}) || !slices.Equal(removed, []string{"db"}) {
		t.Fatalf("Set: added %v, removed %v; want [wiki], [db]", added, removed)
	}
	for range 4 {
		if got, _ := tb.Pick("db", nil); got != "b" {
			t.Fatalf("db picked %q after a dropped it", got)
		}
	}
	if got, ok := tb.Pick("wiki", nil); !ok || got != "a" {
		t.Errorf("wiki: %q, %v", got, ok)
	}
	added, removed = tb.Set("a", nil)
	if len(added) != 0 || !slices.Equal(removed, []string{"web", "wiki"}) {
		t.Errorf("Set(nil): added %v, removed %v", added, removed)
	}
	if _, ok := tb.Pick("web", nil); ok {
		t.Error("web still offered")
	}
	if tb.Remove("a") {
		t.Error("a tunnel set to nothing was still in the table")
	}
}

// With a load, a new stream goes to the replica with the fewest open
// streams; replicas equally loaded share new streams round-robin; a
// stale replica is picked only when no other is left.
func TestPickLeastLoaded(t *testing.T) {
	var tb Table[string]
	tb.Add("a", []string{"db"})
	tb.Add("b", []string{"db"})
	tb.Add("c", []string{"db"})
	loads := map[string]Load{"a": {Streams: 5}, "b": {Streams: 2}, "c": {Streams: 2}}
	load := func(s string) Load { return loads[s] }
	pick := func() string {
		t.Helper()
		got, ok := tb.Pick("db", load)
		if !ok {
			t.Fatal("no tunnel for db")
		}
		return got
	}

	// b and c tie below a: they alternate, a is never picked.
	seen := map[string]int{}
	for range 10 {
		seen[pick()]++
	}
	if seen["a"] != 0 || seen["b"] != 5 || seen["c"] != 5 {
		t.Fatalf("picks with a loaded and b, c tied: %v; want b and c 5 each, a never", seen)
	}

	// Each pick adds a stream where it lands: the loads even out, and
	// then all three share.
	seen = map[string]int{}
	for range 12 {
		got := pick()
		seen[got]++
		l := loads[got]
		l.Streams++
		loads[got] = l
	}
	if seen["a"] != 2 || seen["b"] != 5 || seen["c"] != 5 {
		t.Fatalf("picks while the loads even out: %v; want b, c 3 each to reach a, then 2 each more", seen)
	}

	// A stale tunnel loses to any live one, however loaded.
	loads = map[string]Load{"a": {Streams: 100}, "b": {Stale: true}, "c": {Stale: true}}
	for range 4 {
		if got := pick(); got != "a" {
			t.Fatalf("picked stale %q over a live tunnel", got)
		}
	}
	// When every tunnel is stale, one is still picked (least loaded).
	loads["a"] = Load{Streams: 100, Stale: true}
	if got := pick(); got == "a" {
		t.Fatalf("picked the most loaded of three stale tunnels")
	}

	// A removed replica is never picked, whatever its load.
	loads = map[string]Load{"a": {}, "b": {Streams: 9}, "c": {Streams: 9}}
	tb.Remove("a")
	for range 4 {
		if got := pick(); got == "a" {
			t.Fatal("picked a removed tunnel")
		}
	}
}

// BenchmarkPick measures a pick among 4 replicas, round-robin (nil load)
// and least-loaded.
func BenchmarkPick(b *testing.B) {
	var tb Table[int]
	for i := range 4 {
		tb.Add(i, []string{"db"})
	}
	loads := []Load{{Streams: 3}, {Streams: 1}, {Streams: 1}, {Streams: 2}}
	for _, bc := range []struct {
		name string
		load func(int) Load
	}{{"round-robin", nil}, {"least-loaded", func(i int) Load { return loads[i] }}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				tb.Pick("db", bc.load)
			}
		})
	}
}

// A connector's pool of tunnels is one replica: Pick weighs it by the
// streams on all of its tunnels, then by the tunnel's own; a group is
// forgotten with its tunnel. Over more than smallGroups tunnels the sums
// go through a map, with the same result.
func TestPickWeighsAPoolAsOneReplica(t *testing.T) {
	for _, extra := range []int{0, smallGroups} {
		var tb Table[string]
		loads := map[string]Load{}
		for _, tun := range []string{"a1", "a2", "b1"} {
			tb.Add(tun, []string{"db"})
			tb.Group(tun, tun[:1])
		}
		// Idle connectors of other services do not count.
		for i := range extra {
			tb.Add(fmt.Sprint("x", i), []string{"other"})
		}
		// Replicas that never take a stream: only in the big table.
		for i := range extra {
			name := fmt.Sprint("busy", i)
			tb.Add(name, []string{"db"})
			loads[name] = Load{Streams: 1000}
		}
		// Six streams, each counted where it lands: connector a (two
		// tunnels) and connector b (one) take three each, and a's three
		// are spread 2 + 1 over its tunnels.
		got := map[string]int{}
		for range 6 {
			tun, ok := tb.Pick("db", func(s string) Load { return loads[s] })
			if !ok {
				t.Fatal("no tunnel for db")
			}
			got[tun]++
			l := loads[tun]
			l.Streams++
			loads[tun] = l
		}
		if a, b := got["a1"]+got["a2"], got["b1"]; a != 3 || b != 3 {
			t.Fatalf("with %d more tunnels: connector a got %d streams over its 2 tunnels, b %d over its 1 (%v); want 3 and 3", 2*extra, a, b, got)
		}
		if d := got["a1"] - got["a2"]; d < -1 || d > 1 {
			t.Errorf("a's streams not spread over its tunnels: %v", got)
		}
		tb.Remove("a1")
		tb.Add("a1", []string{"db"}) // back without a group: a replica of its own
		// Grouped, a (2 + 0) would lose to b (1); a1 alone is a replica
		// with 2 and a2 one with 0.
		loads["a1"], loads["a2"], loads["b1"] = Load{Streams: 2}, Load{Streams: 0}, Load{Streams: 1}
		if tun, _ := tb.Pick("db", func(s string) Load { return loads[s] }); tun != "a2" {
			t.Errorf("picked %s; want a2: a1's group was to be forgotten with it", tun)
		}
	}
}

// A replica whose back-end is down (one of its tunnels marked Failing)
// is passed over, all its tunnels with it, however idle; when every
// replica is failing, the least loaded is picked as before.
func TestPickPassesOverAFailingReplica(t *testing.T) {
	var tb Table[string]
	for _, tun := range []string{"a1", "a2", "b1"} {
		tb.Add(tun, []string{"db"})
		tb.Group(tun, tun[:1])
	}
	loads := map[string]Load{"a1": {Failing: true}, "b1": {Streams: 50}}
	for range 10 {
		if tun, _ := tb.Pick("db", func(s string) Load { return loads[s] }); tun != "b1" {
			t.Fatalf("picked %s of the failing replica a; want b1, busy but working", tun)
		}
	}
	loads["b1"] = Load{Streams: 50, Failing: true}
	if tun, _ := tb.Pick("db", func(s string) Load { return loads[s] }); tun != "a1" && tun != "a2" {
		t.Fatalf("every replica failing: picked %s; want the least loaded (a)", tun)
	}
	loads["a1"] = Load{Failing: true, Stale: true}
	loads["a2"] = Load{Stale: true}
	loads["b1"] = Load{Streams: 50, Failing: true}
	if tun, _ := tb.Pick("db", func(s string) Load { return loads[s] }); tun != "b1" {
		t.Fatalf("picked %s; a live failing tunnel (b1) comes before stale ones", tun)
	}
}
