// Package health serves the liveness and readiness probes that load
// balancers and orchestrators ask (GET /livez, GET /readyz), asks them
// for `sallyport health`, and tells systemd when a role is ready
// (sd_notify).
//
// The probes answer in plain text with "ok" or a short reason, and
// nothing else: they are served without authentication, so what they
// say is what anyone who reaches the port learns.
//
//	mux.Handle("GET /livez", health.Live())
//	mux.Handle("GET /readyz", health.Ready(func() error { ... }))
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Paths of the probes.
const (
	LivePath  = "/livez"
	ReadyPath = "/readyz"
)

// Routes adds GET LivePath and GET ReadyPath to mux; ready returns nil
// when the process is ready, or else an error whose text is the reason,
// which the probe shows to anyone.
func Routes(mux *http.ServeMux, ready func() error) {
	mux.HandleFunc("GET "+LivePath, func(w http.ResponseWriter, _ *http.Request) {
		write(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET "+ReadyPath, func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			write(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		write(w, http.StatusOK, "ok")
	})
}

// Handler serves only the two probes: 404 for anything else.
func Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	Routes(mux, ready)
	return mux
}

func write(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// maxReply bounds what Probe reads of a reply.
const maxReply = 512

// Probe asks the probe at addr (an http:// URL ending …/livez or …/readyz) with hc and returns
// nil when it answers 200, or else an error that carries its reason. A
// zero timeout means 5s.
func Probe(ctx context.Context, hc *http.Client, addr string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr, nil)
	if err != nil {
		return fmt.Errorf("bad probe address %q: %w", addr, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL says nothing here; the cause does
		}
		return fmt.Errorf("unreachable: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	reason := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	if i := strings.IndexByte(reason, '\n'); i >= 0 {
		reason = reason[:i]
	}
	if reason == "" {
		reason = resp.Status
	}
	return fmt.Errorf("%s (%d)", reason, resp.StatusCode)
}
