package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/bench/traffic"
)

// wrk 4.1's summary with --latency, as Debian's wrk prints it.
const wrkOut = `Running 1s test @ http://127.0.0.1:40000/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.51ms    2.09ms  41.21ms   93.18%
    Req/Sec    17.73k     1.98k   20.94k    70.00%
  Latency Distribution
     50%  842.00us
     75%    1.51ms
     90%    3.12ms
     99%   11.20ms
  35276 requests in 1.00s, 6.66MB read
Requests/sec:  35241.20
Transfer/sec:      6.65MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	want := traffic.Requests{Count: 35276, Rate: 35241.20, P50: 842 * time.Microsecond, P99: 11200 * time.Microsecond}
	if r != want {
		t.Errorf("parsed %+v, want %+v", r, want)
	}
}

// A run in which wrk met errors is refused, not reported: every request
// must have been carried.
func TestParseWrkRefusesErrors(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{"  Socket errors: connect 0, read 12, write 0, timeout 0\n", "socket errors: connect 0, read 12"},
		{"  Non-2xx or 3xx responses: 7\n", "7 answers were not 2xx"},
	} {
		out := strings.Replace(wrkOut, "Requests/sec:", tc.extra+"Requests/sec:", 1)
		if _, err := parseWrk(out); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %q: error %v, want one saying %q", strings.TrimSpace(tc.extra), err, tc.want)
		}
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("output without a summary parsed")
	}
}
