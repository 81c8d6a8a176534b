package runner

import (
	"context"
	"fmt"
	"time"
)

// Signals. Waiters on one name share a round: a channel that the next
// Signal closes after storing its value, and a count of parked waiters. A
// Signal therefore wakes any number of waiters with one close, and its count
// is exact: a waiter that times out removes itself under the core's lock, and
// one that finds its round already fired takes the value even if its
// timer fired too, because the signaller has counted it.
//
// A SignalAtLeast that found too few waiters is queued as pending on the
// name; while any is pending, an arriving waiter does not park but takes the
// oldest pending value at once. So at any moment a name has parked waiters or
// pending signallers, never both.

type signalState struct {
	round   *round           // parked waiters, nil when none
	pending []*pendingSignal // oldest first
}

type round struct {
	fired  chan struct{} // closed by the signal, after value is set
	value  []byte        // the signaller's private copy, never changed
	parked int           // waiters of both kinds
	// funcs are the round's WaitForSignalFunc waiters (counted in
	// parked), which the signal hands its value; signalled is set with
	// fired, under the core's lock.
	funcs     *funcWaiter
	signalled bool
}

// funcWaiter is a WaitForSignalFunc waiter: an entry in its round's list
// instead of a parked goroutine.
type funcWaiter struct {
	c          *LocalCore
	name       string
	st         *signalState
	g          *round // nil until parked, and once taken out of the round (closing)
	prev, next *funcWaiter
	done       func([]byte, error)
	timer      *time.Timer
	stopCtx    func() bool
	timeout    time.Duration
	// parked: waitFunc has run; aborted: giveUp's error before it did
	// (waitFunc then ends the wait with it). Under the core's lock.
	parked  bool
	aborted error
}

type pendingSignal struct {
	value     []byte
	need      int           // recipients still wanted
	delivered int           // recipients after it became pending
	done      chan struct{} // closed when need is reached
}

// WaitForSignal parks until name is signalled. See Core.
func (c *LocalCore) WaitForSignal(ctx context.Context, name string, timeout time.Duration) ([]byte, error) {
	if err := c.opts.CheckSize("runner: wait for signal", name, nil); err != nil {
		return nil, err
	}
	if err := c.check(ctx); err != nil {
		return nil, fmt.Errorf("runner: wait for signal %q: %w", name, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("runner: wait for signal %q: %w", name, ErrClosed)
	}
	st := c.signals[name]
	if st != nil && len(st.pending) > 0 {
		v := c.deliverPendingLocked(name, st)
		c.mu.Unlock()
		return clone(v), nil
	}
	st, g := c.parkLocked(name, st)
	c.mu.Unlock()

	dl := newDeadline(c.timeoutFor(ctx, timeout))
	defer dl.stop()
	var err error
	select {
	case <-g.fired:
		return clone(g.value), nil
	case <-ctx.Done():
		err = ctxErr(ctx)
	case <-c.done:
		err = ErrClosed
	case <-dl.C:
		err = dl.err()
	}

	c.mu.Lock()
	select {
	case <-g.fired:
		// Signalled while we were giving up: the signaller counted us,
		// so we take the value.
		c.mu.Unlock()
		return clone(g.value), nil
	default:
	}
	g.parked--
	c.stats.Waiters--
	if g.parked == 0 && st.round == g {
		st.round = nil
		c.forgetSignalLocked(name, st)
	}
	c.mu.Unlock()
	return nil, fmt.Errorf("runner: wait for signal %q: %w", name, err)
}

// parkLocked counts a waiter into the round of name, whose state is st
// (nil when name has none yet), and returns the state and round.
func (c *LocalCore) parkLocked(name string, st *signalState) (*signalState, *round) {
	if st == nil {
		st = &signalState{}
		c.signals[name] = st
	}
	if st.round == nil {
		st.round = &round{fired: make(chan struct{})}
	}
	st.round.parked++
	c.stats.Waiters++
	return st, st.round
}

// WaitForSignalFunc is WaitForSignal without a parked goroutine. See
// SignalFuncWaiter.
func (c *LocalCore) WaitForSignalFunc(ctx context.Context, name string, timeout time.Duration, done func([]byte, error)) {
	c.waitFunc(ctx, &funcWaiter{c: c, name: name, done: done}, timeout)
}

// waitFunc parks w, a new funcWaiter of c with its name and done set, as
// WaitForSignalFunc does. w.giveUp may be called before, from any
// goroutine: the wait then ends with its error (CoreScope registers it so
// before it parks).
func (c *LocalCore) waitFunc(ctx context.Context, w *funcWaiter, timeout time.Duration) {
	name := w.name
	if err := c.opts.CheckSize("runner: wait for signal", name, nil); err != nil {
		w.done(nil, err)
		return
	}
	if err := c.check(ctx); err != nil {
		w.done(nil, fmt.Errorf("runner: wait for signal %q: %w", name, err))
		return
	}
	c.mu.Lock()
	w.parked = true
	if err := w.aborted; err != nil || c.closed {
		c.mu.Unlock()
		if err == nil {
			err = ErrClosed
		}
		w.done(nil, fmt.Errorf("runner: wait for signal %q: %w", name, err))
		return
	}
	st := c.signals[name]
	if st != nil && len(st.pending) > 0 {
		v := c.deliverPendingLocked(name, st)
		c.mu.Unlock()
		w.done(v, nil)
		return
	}
	st, g := c.parkLocked(name, st)
	w.st, w.g, w.next = st, g, g.funcs
	if g.funcs != nil {
		g.funcs.prev = w
	}
	g.funcs = w
	// Both fire in goroutines of their own, which wait for the lock.
	if d := c.timeoutFor(ctx, timeout); d > 0 {
		w.timeout = d
		w.timer = time.AfterFunc(d, w.timedOut)
	}
	if ctx.Done() != nil {
		w.stopCtx = context.AfterFunc(ctx, func() { w.giveUp(ctxErr(ctx)) })
	}
	c.mu.Unlock()
}

func (w *funcWaiter) timedOut() {
	w.giveUp(fmt.Errorf("%w after %v", ErrTimeout, w.timeout))
}

// stop stops w's timer and context watch.
func (w *funcWaiter) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.stopCtx != nil {
		w.stopCtx()
	}
}

// giveUp ends w's wait with err, unless a signal or the core's closing
// ended it first; before w parks, it makes waitFunc end it.
func (w *funcWaiter) giveUp(err error) {
	c := w.c
	c.mu.Lock()
	g := w.g
	if g == nil && !w.parked && w.aborted == nil {
		w.aborted = err
	}
	if g == nil || g.signalled {
		c.mu.Unlock()
		return
	}
	g.unlinkLocked(w)
	g.parked--
	c.stats.Waiters--
	if g.parked == 0 && w.st.round == g {
		w.st.round = nil
		c.forgetSignalLocked(w.name, w.st)
	}
	c.mu.Unlock()
	w.stop()
	w.done(nil, fmt.Errorf("runner: wait for signal %q: %w", w.name, err))
}

// unlinkLocked takes w out of g's list.
func (g *round) unlinkLocked(w *funcWaiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		g.funcs = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.g, w.prev, w.next = nil, nil, nil
}

// deliver hands value to the waiters of a signalled round's list.
func deliver(ws *funcWaiter, value []byte) {
	for w := ws; w != nil; {
		next := w.next
		w.stop()
		w.done(value, nil)
		w = next
	}
}

// closeFuncsLocked takes every WaitForSignalFunc waiter out of its round,
// for Close to end them.
func (c *LocalCore) closeFuncsLocked() []*funcWaiter {
	var ws []*funcWaiter
	for name, st := range c.signals {
		g := st.round
		if g == nil {
			continue
		}
		for g.funcs != nil {
			w := g.funcs
			g.unlinkLocked(w)
			g.parked--
			c.stats.Waiters--
			ws = append(ws, w)
		}
		if g.parked == 0 {
			st.round = nil
			c.forgetSignalLocked(name, st)
		}
	}
	return ws
}

// deliverPendingLocked gives an arriving waiter the oldest pending value and
// completes that signaller if it has its recipients.
func (c *LocalCore) deliverPendingLocked(name string, st *signalState) []byte {
	p := st.pending[0]
	p.delivered++
	if p.delivered >= p.need {
		st.pending[0] = nil
		st.pending = st.pending[1:]
		c.stats.PendingSignals--
		close(p.done)
		c.forgetSignalLocked(name, st)
	}
	return p.value
}

// forgetSignalLocked drops the state of a name nobody waits or signals on.
func (c *LocalCore) forgetSignalLocked(name string, st *signalState) {
	if st.round == nil && len(st.pending) == 0 && c.signals[name] == st {
		delete(c.signals, name)
	}
}

// Signal wakes every waiter parked on name. See Core.
func (c *LocalCore) Signal(ctx context.Context, name string, value []byte) (int, error) {
	return c.SignalAtLeast(ctx, name, value, 0)
}

// SignalAtLeast wakes every waiter parked on name and waits, if needed, for
// late ones until min received value. See Core.
func (c *LocalCore) SignalAtLeast(ctx context.Context, name string, value []byte, min int) (int, error) {
	if err := c.opts.CheckSize("runner: signal", name, value); err != nil {
		return 0, err
	}
	if err := c.check(ctx); err != nil {
		return 0, fmt.Errorf("runner: signal %q: %w", name, err)
	}
	v := clone(value)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, fmt.Errorf("runner: signal %q: %w", name, ErrClosed)
	}
	st := c.signals[name]
	woken := 0
	var funcs *funcWaiter
	if st != nil && st.round != nil {
		g := st.round
		st.round = nil
		g.value = v
		woken = g.parked
		c.stats.Waiters -= woken
		g.signalled = true
		funcs, g.funcs = g.funcs, nil
		close(g.fired)
		c.forgetSignalLocked(name, st)
	}
	if woken >= min {
		c.mu.Unlock()
		deliver(funcs, v)
		return woken, nil
	}
	if c.signals[name] != st || st == nil {
		st = &signalState{}
		c.signals[name] = st
	}
	p := &pendingSignal{value: v, need: min - woken, done: make(chan struct{})}
	st.pending = append(st.pending, p)
	c.stats.PendingSignals++
	c.mu.Unlock()
	deliver(funcs, v)

	dl := newDeadline(c.timeoutFor(ctx, 0))
	defer dl.stop()
	var err error
	select {
	case <-p.done:
		return woken + p.delivered, nil
	case <-ctx.Done():
		err = ctxErr(ctx)
	case <-c.done:
		err = ErrClosed
	case <-dl.C:
		err = dl.err()
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-p.done:
		return woken + p.delivered, nil
	default:
	}
	for i, q := range st.pending {
		if q == p {
			st.pending = append(st.pending[:i], st.pending[i+1:]...)
			break
		}
	}
	c.stats.PendingSignals--
	c.forgetSignalLocked(name, st)
	return woken + p.delivered, fmt.Errorf("runner: signal %q: %d of %d recipients: %w", name, woken+p.delivered, min, err)
}
