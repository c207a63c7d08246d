package route

import "testing"

func TestNames(t *testing.T) {
	var n Names
	n.Add("web.example.com", "web")
	n.Add("*.apps.example.com", "apps")
	n.Add("x.apps.example.com", "x")
	n.Add("Upper.Example.COM.", "upper")
	tests := map[string]string{
		"web.example.com":      "web",
		"WEB.example.com.":     "web",
		"upper.example.com":    "upper",
		"a.apps.example.com":   "apps",
		"A.Apps.Example.com":   "apps",
		"x.apps.example.com":   "x",
		"a.b.apps.example.com": "",
		"apps.example.com":     "",
		".apps.example.com":    "",
		"example.com":          "",
		"":                     "",
	}
	for host, want := range tests {
		got, ok := n.Lookup(host)
		if got != want || ok != (want != "") {
			t.Errorf("Lookup(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
	var empty Names
	if s, ok := empty.Lookup("web.example.com"); ok {
		t.Errorf("an empty Names matched %q", s)
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"web.example.com":      "web.example.com",
		"web.example.com:8443": "web.example.com",
		"[::1]:443":            "::1",
		"[::1]":                "::1",
		"127.0.0.1:80":         "127.0.0.1",
	} {
		if got := HostOnly(in); got != want {
			t.Errorf("HostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}
