package config

import (
	"slices"
	"strings"
	"testing"
)

// A reload's restart-only changes are named at their file and line;
// services and listeners, which a reload changes, are not.
func TestRestartChangesEdge(t *testing.T) {
	read := func(doc string) Edge {
		t.Helper()
		e, err := ReadEdge(strings.NewReader(doc), "edge.yaml")
		if err != nil {
			t.Fatal(err)
		}
		e.ApplyDefaults()
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
		return e
	}
	running := read("data_dir: /d\nservices:\n  db: {listen: ':1'}\n")
	next := read("data_dir: /d\ntunnel:\n  listen: ':7000'\n  advertise: [e.example:7000]\nlisteners:\n  - {kind: http, listen: ':80'}\nservices:\n  db: {listen: ':2'}\n  web: {hosts: [w.example]}\n")
	ps := RestartChanges(running, next, next.Origin, EdgeLiveKeys)
	var got []string
	for _, p := range ps {
		got = append(got, p.Error())
	}
	want := []string{
		"edge.yaml:3: tunnel.listen: changed, but only a restart puts it in force; the running value stays (:5500)",
		"edge.yaml:4: tunnel.advertise: changed, but only a restart puts it in force; the running value stays (unset)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("restart-only changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ps := RestartChanges(running, running, running.Origin, EdgeLiveKeys); len(ps) != 0 {
		t.Errorf("the same config: %v", ps)
	}
}

func TestRestartChangesConnector(t *testing.T) {
	running := Connector{DataDir: "/d", Edges: []string{"e1:5500"}, Services: map[string]ConnectorService{"db": {Address: "127.0.0.1:5432"}}}
	running.ApplyDefaults()
	next := running
	next.Services = map[string]ConnectorService{"web": {Address: "127.0.0.1:80"}}
	next.Edges = []string{"e2:5500"}
	next.Origin.SetFlag("edges", "--edge")
	ps := RestartChanges(running, next, next.Origin, ConnectorLiveKeys)
	if len(ps) != 1 || ps[0].Error() != "flag --edge: edges: changed, but only a restart puts it in force; the running value stays ([e1:5500])" {
		t.Errorf("restart-only changes: %v", ps)
	}
}

func TestDiffServices(t *testing.T) {
	added, removed, changed := DiffServices(
		map[string]EdgeService{"a": {Listen: ":1"}, "c": {Listen: ":3"}, "d": {Listen: ":4"}},
		map[string]EdgeService{"a": {Listen: ":1", Policy: Policy{MaxConnections: 1}}, "b": {Listen: ":2"}, "d": {Listen: ":4"}})
	if !slices.Equal(added, []string{"b"}) || !slices.Equal(removed, []string{"c"}) || !slices.Equal(changed, []string{"a"}) {
		t.Errorf("added %v, removed %v, changed %v; want [b], [c], [a]", added, removed, changed)
	}
}
