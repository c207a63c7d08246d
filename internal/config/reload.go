package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Keys a reload puts in force; every other key of a role's config needs a
// restart (see RestartChanges).
var (
	EdgeLiveKeys      = []string{"services", "listeners"}
	ConnectorLiveKeys = []string{"services"}
)

// Place returns a Problem about key with msg, placed where the value of
// key came from (its flag, or its file and line), as Validate places its
// own.
func (o Origin) Place(key, msg string) Problem {
	p := o.place(key)
	p.Msg = msg
	return p
}

// RestartChanges compares a role's running config with the one read for
// a reload (two Edge or two Connector values, defaults applied) and
// returns a Problem for each setting that differs, apart from the live
// keys (EdgeLiveKeys, ConnectorLiveKeys): placed at next's file and line
// (or flag), saying it needs a restart. A reload keeps the running value
// of each. Nil when only live keys differ.
func RestartChanges(running, next any, origin Origin, live []string) Problems {
	var ps Problems
	skip := map[string]bool{}
	for _, k := range live {
		skip[k] = true
	}
	var walk func(a, b reflect.Value, prefix string)
	walk = func(a, b reflect.Value, prefix string) {
		t := a.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := joinKey(prefix, name)
			if skip[key] {
				continue
			}
			fa, fb := a.Field(i), b.Field(i)
			if fa.Kind() == reflect.Struct && fa.Type() != durationType {
				walk(fa, fb, key)
				continue
			}
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
				ps = append(ps, origin.Place(key, fmt.Sprintf(
					"changed, but only a restart puts it in force; the running value stays (%v)", describeValue(fa))))
			}
		}
	}
	walk(reflect.ValueOf(running), reflect.ValueOf(next), "")
	return ps
}

// describeValue prints a config value for a message.
func describeValue(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "unset"
		}
		v = v.Elem()
	}
	s := fmt.Sprint(v.Interface())
	if s == "" || s == "[]" {
		return "unset"
	}
	return s
}

// DiffServices names the services that next adds to running, removes from
// it, and changes (any setting), each sorted: what a reload reports.
func DiffServices[T any](running, next map[string]T) (added, removed, changed []string) {
	for _, name := range slices.Sorted(maps.Keys(next)) {
		prev, ok := running[name]
		switch {
		case !ok:
			added = append(added, name)
		case !reflect.DeepEqual(prev, next[name]):
			changed = append(changed, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(running)) {
		if _, ok := next[name]; !ok {
			removed = append(removed, name)
		}
	}
	return added, removed, changed
}
