// Package netpoll calls back when a descriptor becomes readable, so that
// nothing has to wait in a read for bytes that may take hours to come.
//
//	var p netpoll.Poller // the zero value is ready
//	if err := p.Open(); err != nil {
//		// not on this platform (only Linux has it): read in a goroutine
//	}
//	s := p.Source(rawConn, func() { /* readable: read it, then s.Arm() again */ })
//	s.Arm() // ready is called once, the next time the descriptor is readable
//	...
//	s.Close() // before the descriptor itself is closed
//
// Arming is one-shot: each Arm gives at most one call of ready. A
// descriptor that is readable, at end of stream, hung up or in error
// counts as readable, so that the reader finds out what happened.
//
// A Poller runs one goroutine while any Source of it is registered (armed
// at least once and not closed), and none otherwise: a Poller with nothing
// registered holds no goroutine, only its descriptors once opened (see
// Close). The package knows nothing of what its callers do on readiness.
package netpoll

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// ErrClosed is returned by Arm on a Source that was closed.
var ErrClosed = errors.New("netpoll: source closed")

// A Poller tells registered descriptors' readiness by callback. The zero
// value is ready for use; it opens its kernel resources on first use
// (Open). A Poller is safe for concurrent use; it must not be copied after
// first use.
type Poller struct {
	open struct {
		once sync.Once
		err  error
		k    kernel // the platform's poller, valid if err is nil
	}

	// regs guards the registered sources and the loop goroutine's life.
	regs struct {
		sync.Mutex
		byID    map[uint64]*Source // registered sources, by event id
		next    uint64             // the next event id to hand out
		running bool               // the loop goroutine runs
		closed  bool               // Close has begun: no new registration
		err     error              // the kernel's poller failed: nothing can be armed
	}
	loopDone sync.WaitGroup // the loop goroutine, while it runs
}

// Open makes the poller's kernel resources if they are not made yet, and
// returns the error that making them gave, then and on every later call:
// errors.ErrUnsupported on a platform without a poller (all but Linux).
// Source and Arm call it themselves; a caller asks first to choose
// another way of reading where there is no poller.
func (p *Poller) Open() error {
	p.open.once.Do(func() { p.open.err = p.open.k.init() })
	return p.open.err
}

// Close waits until no Source of p is registered and its goroutine has
// ended, then frees its kernel resources: every Source must have been
// closed first (else Close waits for them). A Poller that lives as long
// as the process need not be closed. Close is idempotent; a closed Poller
// arms nothing (ErrClosed).
func (p *Poller) Close() error {
	p.regs.Lock()
	already := p.regs.closed
	p.regs.closed = true
	p.regs.Unlock()
	if already {
		return nil
	}
	p.loopDone.Wait()
	if p.Open() != nil {
		return nil // nothing was made
	}
	return p.open.k.close()
}

// A Source is a descriptor that a Poller calls back for. Its methods are
// safe for concurrent use, and may be called from ready.
type Source struct {
	p     *Poller
	c     syscall.RawConn
	ready func()

	// state guards the registration: the event id while registered with
	// p, 0 before, closedID after Close.
	state struct {
		sync.Mutex
		id uint64
	}
}

// closedID is a closed Source's id, never handed out.
const closedID = ^uint64(0)

// Source returns c as a source of p that calls ready, from p's goroutine,
// once per Arm, when c becomes readable; ready must not block. Nothing is
// registered before the first Arm.
func (p *Poller) Source(c syscall.RawConn, ready func()) *Source {
	return &Source{p: p, c: c, ready: ready}
}

// Arm asks for ready to be called once, as soon as the descriptor is
// readable: perhaps before Arm returns, from p's goroutine. Arming a
// source that is armed already changes nothing. It fails with ErrClosed
// after Close, with errors.ErrUnsupported where there is no poller, and
// with the descriptor's error if it was closed.
func (s *Source) Arm() error {
	if err := s.p.Open(); err != nil {
		return err
	}
	s.state.Lock()
	defer s.state.Unlock()
	if s.state.id == closedID {
		return ErrClosed
	}
	add := s.state.id == 0
	id, err := s.p.register(s, s.state.id)
	if err != nil {
		return err
	}
	s.state.id = id
	if cerr := s.c.Control(func(fd uintptr) { err = s.p.open.k.arm(int(fd), s.state.id, add) }); cerr != nil {
		err = cerr
	}
	if err != nil && add {
		s.p.unregister(s.state.id)
		s.state.id = 0
	}
	return err
}

// Close takes the descriptor out of the poller: no Arm after it has an
// effect. A ready call the descriptor's readiness has already begun may
// still run while or after Close returns; ready must tolerate a call
// that comes late. Close the Source before the descriptor. Close is
// idempotent.
func (s *Source) Close() {
	s.state.Lock()
	defer s.state.Unlock()
	id := s.state.id
	s.state.id = closedID
	if id == 0 || id == closedID {
		return
	}
	s.c.Control(func(fd uintptr) { s.p.open.k.remove(int(fd)) })
	s.p.unregister(id)
}

// register gives s an event id unless it has one (id), and makes sure
// the loop runs.
func (p *Poller) register(s *Source, id uint64) (uint64, error) {
	p.regs.Lock()
	defer p.regs.Unlock()
	switch {
	case p.regs.err != nil:
		return 0, p.regs.err
	case id == 0 && p.regs.closed:
		return 0, ErrClosed
	}
	if id == 0 {
		if p.regs.byID == nil {
			p.regs.byID = make(map[uint64]*Source)
			p.regs.next = firstID
		}
		id = p.regs.next
		p.regs.next++
		p.regs.byID[id] = s
	}
	if !p.regs.running {
		p.regs.running = true
		p.loopDone.Add(1)
		go p.loop()
	}
	return id, nil
}

// unregister forgets id; the last one out wakes the loop so that it ends.
func (p *Poller) unregister(id uint64) {
	p.regs.Lock()
	defer p.regs.Unlock()
	delete(p.regs.byID, id)
	if len(p.regs.byID) == 0 && p.regs.running {
		p.open.k.wake()
	}
}

// loop waits for readiness and calls the sources back, until none is
// registered.
func (p *Poller) loop() {
	defer p.loopDone.Done()
	var ids []uint64
	var ready []*Source
	for {
		var err error
		ids, err = p.open.k.wait(ids[:0])
		ready = ready[:0]
		p.regs.Lock()
		if err != nil {
			// Cannot happen with a valid instance. Tell every source, so
			// that its reader looks, and refuse every later Arm, so that
			// nobody waits on a poller that no longer polls.
			p.regs.err = fmt.Errorf("netpoll: wait: %w", err)
			for _, s := range p.regs.byID {
				ready = append(ready, s)
			}
		}
		for _, id := range ids {
			if s := p.regs.byID[id]; s != nil {
				ready = append(ready, s)
			}
		}
		end := len(p.regs.byID) == 0 || err != nil
		if end {
			p.regs.running = false
		}
		p.regs.Unlock()
		for _, s := range ready {
			s.ready()
		}
		if end {
			return
		}
	}
}
