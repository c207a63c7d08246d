package main_test

import (
	"strings"
	"testing"
)

// `sallyport sessions` from the CLI: its refusals say what to do. (The
// links themselves are tested end to end in internal/testnet.)
func TestSessionsCommandRefusals(t *testing.T) {
	s := startSite(t, nil)
	data := s.edge.data
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"sessions", "create", "--service", "nope"}, `no service named "nope"`},
		{[]string{"sessions", "create", "--service", "echo"}, "service echo is not reachable over WebSocket: no http or https listener has an edge_hosts name"},
		{[]string{"sessions", "create", "--service", "echo", "--ttl", "48h"}, "ttl 48h0m0s out of range: use 1s to 24h0m0s (default 5m0s)"},
		{[]string{"sessions", "revoke", "0123456789abcdef"}, "revoke session 0123456789abcdef"},
	} {
		code, _, stderr := sallyport(t, append(tt.args, "--data", data)...)
		if code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant %q", strings.Join(tt.args, " "), code, stderr, tt.want)
		}
	}
	if out := mustRun(t, "sessions", "list", "--data", data); !strings.Contains(out, "SERVICE") {
		t.Errorf("sessions list prints:\n%s", out)
	}
}
