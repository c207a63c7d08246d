package ingress

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/sallyport/sallyport/internal/config"
	"github.com/sallyport/sallyport/internal/tlsfiles"
)

// KeyError is a listener of a config that could not be opened or
// prepared: Key is the config key at fault (such as "listeners[0].listen"
// or "listeners[0].certificates"), for a message that names its file and
// line.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// Change is a config's listeners and routes, prepared by Prepare and not
// yet in force: Apply puts it in force, Abort drops it. Exactly one of
// the two must be called.
type Change struct {
	s      *Set
	routes *routes
	// updates install the new settings of listeners that stay (an https
	// listener's certificates, a socks5 listener's users); added are
	// opened and not yet serving; removed are open and serving.
	updates []func()
	added   []*entry
	removed []*entry
}

// Added and Removed name the listeners the change opens and closes, as
// "kind address" (for a service's own port, "service NAME address").
func (ch *Change) Added() []string   { return keys(ch.added) }
func (ch *Change) Removed() []string { return keys(ch.removed) }

func keys(es []*entry) []string {
	out := make([]string, len(es))
	for i, en := range es {
		out[i] = en.key
	}
	return out
}

// Prepare reads everything cfg's listeners need (certificate, client CA
// and password files) and opens, with listen, the listeners the Set does
// not have yet; it changes nothing in force. A listener is the same
// across configs when its kind and listen address are (for a service's
// own port, its service and address): it keeps its socket and its
// connections, and takes the new settings. Any failure closes what
// Prepare opened and is a *KeyError naming the config key at fault.
func (s *Set) Prepare(cfg config.Edge, listen ListenFunc) (_ *Change, err error) {
	ch := &Change{s: s, routes: newRoutes(cfg)}
	defer func() {
		if err != nil {
			ch.Abort()
		}
	}()
	s.open.Lock()
	had := make(map[string]*entry, len(s.open.entries))
	for k, en := range s.open.entries {
		had[k] = en
	}
	s.open.Unlock()
	kept := map[string]bool{}
	// take returns the listener at key that the Set has, or opens one
	// with build; either way it is the config's from now on.
	take := func(key, what, addrKey, addr string, build func(*entry) (listener, error), update func(listener) (func(), error)) (net.Addr, error) {
		if en, ok := had[key]; ok && !kept[key] {
			kept[key] = true
			if update != nil {
				u, err := update(en.ln)
				if err != nil {
					return nil, err
				}
				ch.updates = append(ch.updates, u)
			}
			return en.nl.Addr(), nil
		}
		kept[key] = true
		en := &entry{key: key, what: what}
		// Settings first: a listener whose files do not load is never bound.
		ln, err := build(en)
		if err != nil {
			return nil, err
		}
		if en.nl, err = listen(what, addr); err != nil {
			return nil, &KeyError{Key: addrKey, Err: err}
		}
		en.ln = ln
		bind(ln, en)
		ch.added = append(ch.added, en)
		return en.nl.Addr(), nil
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Services)) {
		svc := cfg.Services[name]
		if svc.Listen == "" {
			// Reached only through shared listeners: a port of its own
			// would skip their checks.
			continue
		}
		key := "service " + name + " " + svc.Listen
		addr, err := take(key, "service "+name, "services."+name+".listen", svc.Listen,
			func(en *entry) (listener, error) { return &tcpListener{s: s, service: name, tr: &en.clients}, nil }, nil)
		if err != nil {
			return nil, err
		}
		ch.routes.svc[name] = addr
	}
	for i, lc := range cfg.Listeners {
		key := lc.Kind + " " + lc.Listen
		if kept[key] {
			key = fmt.Sprintf("%s #%d", key, i) // port 0 twice: two listeners
		}
		what := fmt.Sprintf("%s listener (listeners[%d])", lc.Kind, i)
		at := fmt.Sprintf("listeners[%d]", i)
		var build func(*entry) (listener, error)
		var update func(listener) (func(), error)
		switch lc.Kind {
		case config.KindHTTP, config.KindHTTPS:
			build = func(en *entry) (listener, error) {
				conf, err := s.httpSettings(lc, at, ch.routes)
				if err != nil {
					return nil, err
				}
				return newHTTPListener(s, lc.Kind, conf, &en.clients), nil
			}
			update = func(ln listener) (func(), error) {
				conf, err := s.httpSettings(lc, at, ch.routes)
				if err != nil {
					return nil, err
				}
				f := ln.(*httpListener)
				return func() { f.conf.Store(conf) }, nil
			}
		case config.KindTLS:
			build = func(en *entry) (listener, error) { return &tlsListener{s: s, tr: &en.clients}, nil }
		case config.KindSOCKS5:
			build = func(en *entry) (listener, error) {
				users, err := loadSOCKSUsers(lc.Users)
				if err != nil {
					return nil, &KeyError{Key: at + ".users", Err: err}
				}
				f := &socksListener{s: s, tr: &en.clients}
				f.users.Store(&users)
				return f, nil
			}
			update = func(ln listener) (func(), error) {
				users, err := loadSOCKSUsers(lc.Users)
				if err != nil {
					return nil, &KeyError{Key: at + ".users", Err: err}
				}
				f := ln.(*socksListener)
				return func() { f.users.Store(&users) }, nil
			}
		default:
			return nil, &KeyError{Key: at + ".kind", Err: fmt.Errorf("unknown kind %q", lc.Kind)}
		}
		addr, err := take(key, what, at+".listen", lc.Listen, build, update)
		if err != nil {
			return nil, err
		}
		ch.routes.shared = append(ch.routes.shared, addr)
	}
	for k, en := range had {
		if !kept[k] {
			ch.removed = append(ch.removed, en)
		}
	}
	return ch, nil
}

// bind gives a listener made for en its socket.
func bind(ln listener, en *entry) {
	switch l := ln.(type) {
	case *tcpListener:
		l.l = en.nl
	case *tlsListener:
		l.l = en.nl
	case *socksListener:
		l.l = en.nl
	case *httpListener:
		l.l = en.nl
	}
}

// newRoutes builds the routes of cfg's services; the listeners' addresses
// are filled in by Prepare.
func newRoutes(cfg config.Edge) *routes {
	r := &routes{known: map[string]bool{}, svc: map[string]net.Addr{}}
	for name, svc := range cfg.Services {
		r.known[name] = true
		for _, h := range svc.Hosts {
			r.hosts.Add(h, name)
		}
		for _, h := range svc.SNI {
			r.sni.Add(h, name)
		}
		if svc.Policy.ClientCA != "" {
			r.anyCA = true
		}
	}
	for _, lc := range cfg.Listeners {
		r.anyHTTPS = r.anyHTTPS || lc.Kind == config.KindHTTPS
	}
	return r
}

// httpSettings reads what an http or https listener needs of lc (its
// certificate and client CA files, at is its key) into new settings.
func (s *Set) httpSettings(lc config.Listener, at string, r *routes) (*httpConf, error) {
	var certs *tlsfiles.Certs
	if lc.Kind == config.KindHTTPS {
		pairs := make([]tlsfiles.Pair, len(lc.Certificates))
		for i, c := range lc.Certificates {
			pairs[i] = tlsfiles.Pair{Cert: c.Cert, Key: c.Key}
		}
		var err error
		if certs, err = tlsfiles.LoadCerts(pairs, s.log); err != nil {
			return nil, &KeyError{Key: at + ".certificates", Err: err}
		}
	}
	conf, err := s.newHTTPConf(lc, certs, r.anyCA)
	if err != nil {
		return nil, &KeyError{Key: at + ".client_ca", Err: err}
	}
	return conf, nil
}

// Apply puts the change in force: the new routes for every connection
// from now on, the new settings of the listeners that stay, the added
// listeners accepting; the removed ones stop accepting at once, and
// their live connections may finish for up to drain before they are cut
// off (in the background: Drain waits for them). Connections already
// routed keep going as they were. After Drain has begun it changes
// nothing and closes what Prepare opened.
func (ch *Change) Apply(drain time.Duration) {
	s := ch.s
	s.open.Lock()
	defer s.open.Unlock()
	if s.open.drained {
		// The edge is stopping: Drain has every listener that was open,
		// and nothing changes any more.
		ch.Abort()
		return
	}
	for _, u := range ch.updates {
		u()
	}
	s.routes.Store(ch.routes)
	for _, en := range ch.added {
		s.open.entries[en.key] = en
		if s.open.ctx != nil {
			s.startLocked(en)
		}
	}
	for _, en := range ch.removed {
		if s.open.entries[en.key] != en {
			continue
		}
		delete(s.open.entries, en.key)
		s.retiring.Go(func() { s.retire(en, drain) })
	}
}

// Abort closes the listeners Prepare opened; nothing in force changes.
func (ch *Change) Abort() {
	for _, en := range ch.added {
		if en.nl != nil {
			en.nl.Close()
		}
	}
	ch.added = nil
}

// retire closes en's listener for new connections and lets its live
// ones finish for up to timeout, then cuts off what is left.
func (s *Set) retire(en *entry, timeout time.Duration) {
	en.nl.Close()
	en.ln.drain()
	en.loop.Wait()
	left := en.clients.Wait(timeout)
	en.ln.close()
	if left > 0 {
		s.log.Warn("removed listener: drain timeout, closing client connections still open", "listener", en.what, "count", left)
		return
	}
	s.log.Info("removed listener closed; its connections have finished", "listener", en.what)
}
