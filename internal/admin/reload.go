package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// ReloadResult is what POST /v1/reload answers (200) when the edge read
// its config again and put it in force; a config with any problem is
// refused as a whole (422, with every problem in the error, one a line)
// and the running one stays.
type ReloadResult struct {
	// Changed is false when the config in force already said the same.
	Changed bool `json:"changed"`
	// Services added, removed, and changed (hosts, SNI, policy, port).
	ServicesAdded   []string `json:"services_added,omitempty"`
	ServicesRemoved []string `json:"services_removed,omitempty"`
	ServicesChanged []string `json:"services_changed,omitempty"`
	// Listeners opened and closed, as "kind address" ("service NAME
	// address" for a service's own port); a closed one lets its live
	// connections finish for up to the drain timeout.
	ListenersAdded   []string `json:"listeners_added,omitempty"`
	ListenersRemoved []string `json:"listeners_removed,omitempty"`
	// RestartNeeded lists the settings changed in the file that only a
	// restart puts in force ("edge.yaml:3: tunnel.listen: ..."); the
	// running values stay.
	RestartNeeded []string `json:"restart_needed,omitempty"`
}

// ReloadBackend is what the edge provides to the API for reloads.
type ReloadBackend interface {
	// Reload reads the edge's config again and puts it in force, or
	// refuses it with an *Error whose message names every problem.
	// Reloads run one at a time.
	Reload(ctx context.Context) (ReloadResult, error)
}

func reloadRoutes(mux *http.ServeMux, b ReloadBackend) {
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK)(b.Reload(r.Context()))
	})
}

// Reload asks the edge to read its config again. A refused config is an
// error whose message says why.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	b, err := c.do(ctx, http.MethodPost, "/v1/reload", nil, http.StatusOK)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return res, fmt.Errorf("read admin API reply: %w", err)
	}
	return res, nil
}

// WithActor returns ctx naming actor as who makes the calls made with
// it, for the audit trail: "signal SIGHUP" for a reload on a signal.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}
