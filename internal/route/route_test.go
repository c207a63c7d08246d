package route

import "testing"

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
