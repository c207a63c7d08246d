package route

import (
	"slices"
	"testing"
)

func TestPickSpreadsAndRemoveForgets(t *testing.T) {
	var tb Table[string]
	if _, ok := tb.Pick("db"); ok {
		t.Fatal("empty table picked a tunnel")
	}
	tb.Add("a", []string{"db", "web"})
	tb.Add("b", []string{"db"})
	tb.Add("b", []string{"db"}) // idempotent
	seen := map[string]int{}
	for range 10 {
		got, ok := tb.Pick("db")
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
		if got, _ := tb.Pick("db"); got != "b" {
			t.Fatalf("picked %q after its removal", got)
		}
	}
	if _, ok := tb.Pick("web"); ok {
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
		if got, _ := tb.Pick("db"); got != "b" {
			t.Fatalf("db picked %q after a dropped it", got)
		}
	}
	if got, ok := tb.Pick("wiki"); !ok || got != "a" {
		t.Errorf("wiki: %q, %v", got, ok)
	}
	added, removed = tb.Set("a", nil)
	if len(added) != 0 || !slices.Equal(removed, []string{"web", "wiki"}) {
		t.Errorf("Set(nil): added %v, removed %v", added, removed)
	}
	if _, ok := tb.Pick("web"); ok {
		t.Error("web still offered")
	}
	if tb.Remove("a") {
		t.Error("a tunnel set to nothing was still in the table")
	}
}
