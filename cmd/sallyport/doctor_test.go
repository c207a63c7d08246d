package main_test

import (
	"strings"
	"testing"
)

// `sallyport doctor` takes the connector's own flags and prints its
// table: exit 0 when every check passes, 1 when one fails, naming it.
func TestDoctorCommand(t *testing.T) {
	s := startSite(t, nil)
	args := append([]string{"doctor", "--keyfile", s.keyfile, "--proxy", "direct"}, s.connFlags...)
	code, out, errOut := sallyport(t, args...)
	if code != 0 || !strings.HasPrefix(out, "CHECK") || strings.Count(out, " ok ") != 5 {
		t.Fatalf("doctor on a working site: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = sallyport(t, append(args, "--edge", freePort(t))...)
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "connection refused") || errOut != "" {
		t.Fatalf("doctor with a closed edge port: exit %d\n%s%s", code, out, errOut)
	}
}
