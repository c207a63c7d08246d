package admin

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
)

// MetricsPath is where the admin listener and socket serve the edge's
// Prometheus metrics.
const MetricsPath = "/metrics"

// WithMetrics serves GET /metrics from metrics, in front of api, which
// gets every other request. Over TCP (tokens not empty) a scrape needs
// one of tokens as its bearer token: the admin token, or the metrics
// token, which a Prometheus server can hold without holding the admin
// API (api refuses it everywhere else, as any wrong token). A scrape
// without one gets 401, logged and recorded in the audit trail as
// api's refusals are; scrapes that get in are not recorded (one every
// few seconds would bury the trail). On the socket (tokens nil) its
// permissions are the authentication, as for the rest of the API.
func WithMetrics(b Backend, api, metrics http.Handler, tokens []string, log *slog.Logger) http.Handler {
	var want [][]byte
	for _, t := range tokens {
		if t != "" {
			want = append(want, []byte("Bearer "+t))
		}
	}
	refuse := audited(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Warn("metrics request refused: missing or wrong bearer token", "remote", r.RemoteAddr)
		writeError(w, &Error{http.StatusUnauthorized, "missing or wrong bearer token: use the metrics token (metrics.token) or the admin token (admin.token) in the edge's data directory"})
	}), func(r *http.Request) string { return "metrics scraper via api from " + r.RemoteAddr })
	mux := http.NewServeMux()
	mux.Handle("GET "+MetricsPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tokens != nil && !anyToken(r.Header.Get("Authorization"), want) {
			refuse.ServeHTTP(w, r)
			return
		}
		metrics.ServeHTTP(w, r)
	}))
	mux.Handle("/", api)
	return mux
}

// anyToken reports whether got is one of want, comparing each in
// constant time (and all of them, whichever matches).
func anyToken(got string, want [][]byte) bool {
	ok := 0
	for _, w := range want {
		ok |= subtle.ConstantTimeCompare([]byte(got), w)
	}
	return ok == 1
}
