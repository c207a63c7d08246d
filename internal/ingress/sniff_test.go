package ingress

import "testing"

func TestSniff(t *testing.T) {
	tests := []struct {
		name  string
		sniff func([]byte) verdict
		in    string
		want  verdict
	}{
		{"GET", sniffHTTP, "GET / HTTP/1.1\r\n", accepted},
		{"PROPFIND", sniffHTTP, "PROPFIND /x HTTP/1.1", accepted},
		{"partial method", sniffHTTP, "POS", needMore},
		{"lower case", sniffHTTP, "get / HTTP/1.1", rejected},
		{"short method", sniffHTTP, "GE / HTTP/1.1", rejected},
		{"TLS", sniffHTTP, "\x16\x03\x01\x02\x00", rejected},
		{"SSH", sniffHTTP, "SSH-2.0-OpenSSH_9.2\r\n", rejected},
		{"endless token", sniffHTTP, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", rejected},
		{"TLS record", sniffTLS, "\x16\x03\x01", accepted},
		{"TLS first byte", sniffTLS, "\x16", needMore},
		{"HTTP on TLS", sniffTLS, "GET /", rejected},
		{"SSLv2", sniffTLS, "\x16\x02", rejected},
	}
	for _, tt := range tests {
		if got := tt.sniff([]byte(tt.in)); got != tt.want {
			t.Errorf("%s: %q → %d, want %d", tt.name, tt.in, got, tt.want)
		}
	}
}
