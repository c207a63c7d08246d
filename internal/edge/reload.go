package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/admin"
	"github.com/sallyport/sallyport/internal/admission"
	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/ingress"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/tlsfiles"
)

// liveConfig is the part of the edge's config that a reload changes: the
// services with their policies, and the shared listeners. It is built
// whole and never changed after; e.live holds the one in force, so a
// connection admitted under one keeps its policy slot there whatever a
// reload does.
type liveConfig struct {
	services  map[string]config.EdgeService
	listeners []config.Listener
	policies  map[string]*admission.Policy
}

// current is the live config in force.
func (e *Edge) current() *liveConfig { return e.live.Load() }

// LoadConfigWith sets how Reload reads the edge's config again: as at
// start, the same file and flags. Without it, Reload refuses.
func (e *Edge) LoadConfigWith(load func() (config.Edge, error)) {
	e.reload.Lock()
	defer e.reload.Unlock()
	e.reload.load = load
}

// listenTCP opens a TCP listener; what names it in the error.
func listenTCP(what, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s: %w", what, addr, err)
	}
	return l, nil
}

// newPolicies prepares every service's policy, reading client CA files
// (again whenever they change; log tells of that). A service whose
// policy the previous live config had as it is keeps that one, with its
// slots and rate; a changed one shares the previous one's count of live
// connections (admission.Policy.WithRules). prev is nil at start. An
// error is an *ingress.KeyError naming the key at fault.
func newPolicies(services map[string]config.EdgeService, prev *liveConfig, log *slog.Logger, now func() time.Time) (map[string]*admission.Policy, error) {
	out := make(map[string]*admission.Policy, len(services))
	for name, svc := range services {
		p := svc.Policy
		var old *admission.Policy
		if prev != nil {
			old = prev.policies[name]
			if old != nil && reflect.DeepEqual(prev.services[name].Policy, p) {
				out[name] = old
				continue
			}
		}
		key := "services." + name + ".policy"
		var r admission.Rules
		for _, list := range []struct {
			leaf string
			in   []string
			out  *[]netip.Prefix
		}{{"allow", p.Allow, &r.Allow}, {"deny", p.Deny, &r.Deny}} {
			for _, s := range list.in {
				pfx, err := admission.ParseClientNet(s)
				if err != nil {
					return nil, &ingress.KeyError{Key: key + "." + list.leaf, Err: fmt.Errorf("network %q: %w", s, err)}
				}
				*list.out = append(*list.out, pfx)
			}
		}
		r.MaxConnections = p.MaxConnections
		r.RequireSession = p.RequireSession
		r.Every, r.Burst = p.Rate.Interval()
		if p.ClientCA != "" {
			ca, err := tlsfiles.LoadCAFile(p.ClientCA, log, now)
			if err != nil {
				return nil, &ingress.KeyError{Key: key + ".client_ca", Err: err}
			}
			r.ClientCA = ca
		}
		if old != nil {
			out[name] = old.WithRules(r)
		} else {
			out[name] = admission.NewPolicy(name, r)
		}
	}
	return out, nil
}

// placed turns an *ingress.KeyError into a config Problem at the file
// and line (or flag) of its key in cfg; other errors are returned as
// they are.
func placed(cfg config.Edge, err error) error {
	var ke *ingress.KeyError
	if errors.As(err, &ke) {
		return config.Problems{cfg.Origin.Place(ke.Key, ke.Err.Error())}
	}
	return err
}

// Reasons a reload is refused before the config is read.
var (
	errReloadStarting = errors.New("the edge is still starting; reload once it serves")
	errReloadStopping = errors.New("the edge is stopping")
	errReloadNoConfig = errors.New("this edge cannot read its config again (it was started without a way to)")
)

// Reload reads the edge's config again (LoadConfigWith) and puts its
// services, policies and shared listeners in force as one step, or
// refuses it as a whole. Everything is checked before anything changes:
// the config's every problem, certificate, client CA and password files,
// and binding each new listener. Connections already admitted keep going
// as they were; a listener the config no longer has stops accepting, and
// its connections may finish for up to the drain timeout. Settings only
// a restart changes are reported (RestartNeeded) and keep their running
// values. Reloads run one at a time; each is logged and audited. A
// refusal is an *admin.Error (422) whose message names every problem.
func (e *Edge) Reload(ctx context.Context) (admin.ReloadResult, error) {
	e.reload.Lock()
	defer e.reload.Unlock()
	res, err := e.reloadLocked()
	actor := admin.Actor(ctx)
	if err != nil {
		e.log.Warn("config reload refused; the running config stays", "by", actor, "err", err.Error())
		e.audit(store.AuditEvent{Actor: actor, Action: "config.reload", Result: "refused: " + err.Error()})
		return res, &admin.Error{Status: http.StatusUnprocessableEntity, Message: "reload refused; the running config stays:\n" + err.Error()}
	}
	for _, w := range res.RestartNeeded {
		e.log.Warn("config reload: a setting needs a restart", "problem", w)
	}
	summary := reloadSummary(res)
	e.log.Info("config reloaded", "by", actor, "changed", res.Changed, "what", summary)
	e.audit(store.AuditEvent{Actor: actor, Action: "config.reload", Result: "ok", Detail: summary})
	return res, nil
}

// reloadLocked does Reload's work; e.reload is locked.
func (e *Edge) reloadLocked() (admin.ReloadResult, error) {
	var res admin.ReloadResult
	select {
	case <-e.ready:
	default:
		return res, errReloadStarting
	}
	switch {
	case e.draining.Load():
		return res, errReloadStopping
	case e.reload.load == nil:
		return res, errReloadNoConfig
	}
	cfg, err := e.reload.load()
	if err != nil {
		return res, err
	}
	old := e.current()
	policies, err := newPolicies(cfg.Services, old, e.log, e.now)
	if err != nil {
		return res, placed(cfg, err)
	}
	ch, err := e.listeners.Prepare(cfg, listenTCP)
	if err != nil {
		return res, placed(cfg, err)
	}
	// From here nothing fails: the new config goes in force whole.
	res = diffLive(old, cfg)
	res.ListenersAdded, res.ListenersRemoved = ch.Added(), ch.Removed()
	res.Changed = res.Changed || len(res.ListenersAdded)+len(res.ListenersRemoved) > 0
	for _, p := range config.RestartChanges(e.cfg, cfg, cfg.Origin, config.EdgeLiveKeys) {
		res.RestartNeeded = append(res.RestartNeeded, p.Error())
	}
	e.metrics.Configure(slices.Collect(maps.Keys(cfg.Services)))
	e.live.Store(&liveConfig{services: cfg.Services, listeners: cfg.Listeners, policies: policies})
	ch.Apply(e.cfg.DrainTimeout)
	return res, nil
}

// diffLive says which services a reload from old to cfg adds, removes
// and changes, and whether anything live changes.
func diffLive(old *liveConfig, cfg config.Edge) admin.ReloadResult {
	var res admin.ReloadResult
	res.ServicesAdded, res.ServicesRemoved, res.ServicesChanged = config.DiffServices(old.services, cfg.Services)
	res.Changed = len(res.ServicesAdded)+len(res.ServicesRemoved)+len(res.ServicesChanged) > 0 ||
		!reflect.DeepEqual(old.listeners, cfg.Listeners)
	return res
}

// reloadSummary is one line of what a reload changed.
func reloadSummary(res admin.ReloadResult) string {
	var parts []string
	for _, p := range []struct {
		what  string
		names []string
	}{
		{"services added", res.ServicesAdded}, {"services removed", res.ServicesRemoved}, {"services changed", res.ServicesChanged},
		{"listeners added", res.ListenersAdded}, {"listeners removed", res.ListenersRemoved},
	} {
		if len(p.names) > 0 {
			parts = append(parts, p.what+": "+strings.Join(p.names, ", "))
		}
	}
	if len(res.RestartNeeded) > 0 {
		parts = append(parts, fmt.Sprintf("%d settings need a restart", len(res.RestartNeeded)))
	}
	if len(parts) == 0 {
		return "nothing changed"
	}
	return strings.Join(parts, "; ")
}
