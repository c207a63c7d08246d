package connector

import (
	"errors"
	"maps"
	"slices"

	"github.com/sallyport/sallyport/internal/config"
)

// allowList is the connector's services in force: the only back-ends it
// dials, and the index that answers lookups by address. It is built
// whole and never changed after; a stream keeps the back-end it was
// dialled to whatever a reload does.
type allowList struct {
	services map[string]config.ConnectorService
	// byAddress maps each allowed back-end address (normalized) to its
	// service, to answer lookups (streams that name an address).
	byAddress map[string]string
}

func newAllowList(services map[string]config.ConnectorService) *allowList {
	byAddress := make(map[string]string, len(services))
	for name, svc := range services {
		// Two services may share a back-end: the first name in order
		// serves it by address, whatever the map's order.
		a := normalizeAddress(svc.Address)
		if other, ok := byAddress[a]; !ok || name < other {
			byAddress[a] = name
		}
	}
	return &allowList{services: services, byAddress: byAddress}
}

// offered is the services a Hello offers, sorted.
func (a *allowList) offered() []string { return slices.Sorted(maps.Keys(a.services)) }

// current is the allow-list in force.
func (c *Connector) current() *allowList { return c.live.Load() }

// offerChanges returns the channel that the next reload changing the
// services offered closes.
func (c *Connector) offerChanges() <-chan struct{} {
	c.offers.Lock()
	defer c.offers.Unlock()
	return c.offers.changed
}

// LoadConfigWith sets how Reload reads the connector's config again: as
// at start, the same file and flags. Without it, Reload refuses.
func (c *Connector) LoadConfigWith(load func() (config.Connector, error)) {
	c.reload.Lock()
	defer c.reload.Unlock()
	c.reload.load = load
}

// ReloadResult is what a reload changed.
type ReloadResult struct {
	Added, Removed, Changed []string
	// RestartNeeded names the settings changed in the file that only a
	// restart puts in force, at their file and line; they keep their
	// running values.
	RestartNeeded []string
}

// Reload reads the connector's config again (LoadConfigWith) and puts
// its services, the allow-list, in force, or refuses it as a whole with
// every problem, keeping the running one. From then on a removed service
// gets no new stream (refused as a service this connector does not
// offer) while its live streams go on; a changed address is dialled for
// new streams. When the set of services changes, every tunnel announces
// the new set on a new tunnel and then finishes the streams of the old
// one (for up to the drain timeout). Everything else (edges, keyfile,
// tunnel settings) needs a restart and is reported. Reloads run one at
// a time; each is logged.
func (c *Connector) Reload() (ReloadResult, error) {
	c.reload.Lock()
	defer c.reload.Unlock()
	res, err := c.reloadLocked()
	if err != nil {
		c.log.Warn("config reload refused; the running config stays", "err", err.Error())
		return res, err
	}
	for _, w := range res.RestartNeeded {
		c.log.Warn("config reload: a setting needs a restart", "problem", w)
	}
	c.log.Info("config reloaded", "services_added", res.Added, "services_removed", res.Removed, "services_changed", res.Changed)
	return res, nil
}

var errNoReload = errors.New("this connector cannot read its config again (it was started without a way to)")

// reloadLocked does Reload's work; c.reload is locked.
func (c *Connector) reloadLocked() (ReloadResult, error) {
	var res ReloadResult
	if c.reload.load == nil {
		return res, errNoReload
	}
	cfg, err := c.reload.load()
	if err != nil {
		return res, err
	}
	for _, p := range config.RestartChanges(c.cfg, cfg, cfg.Origin, config.ConnectorLiveKeys) {
		res.RestartNeeded = append(res.RestartNeeded, p.Error())
	}
	old := c.current()
	res.Added, res.Removed, res.Changed = config.DiffServices(old.services, cfg.Services)
	next := newAllowList(cfg.Services)
	c.metrics.Configure(slices.Collect(maps.Keys(cfg.Services)))
	c.live.Store(next)
	if !slices.Equal(old.offered(), next.offered()) {
		c.offers.Lock()
		close(c.offers.changed)
		c.offers.changed = make(chan struct{})
		c.offers.Unlock()
	}
	return res, nil
}
