package natscore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/paster-dev/paster/runner"
)

// SignalAtLeast over several nodes. The signalling node (the origin) sends
// the signal to every node; each node (the origin too) runs it as a pending
// signal of its own LocalCore, which wakes the waiters parked there and gives
// the value to waiters arriving there, and reports every delivery to the
// origin. The origin sums the reports; once they reach min (or the wait
// ends) it tells every node to stop and waits for each node's final count,
// so the count it returns is exact. Other nodes take one recipient at a time
// and report it, so late waiters beyond min are only those that arrived on
// several nodes at the same moment; the origin asks its own LocalCore for all
// it still needs, so on one node the order of several pending signallers is
// the in-memory Core's.

// sal is one node's part in another node's SignalAtLeast.
type sal struct {
	origin string
	cancel context.CancelFunc
}

// SignalAtLeast wakes every waiter on name on every node and stays pending
// across the cluster until min received value. See runner.Core. When NATS is
// down it wakes the waiters here and fails with runner.ErrUnavailable.
func (c *Core) SignalAtLeast(ctx context.Context, name string, value []byte, min int) (int, error) {
	if err := c.opts.Core.CheckSize("natscore: signal", name, value); err != nil {
		return 0, err
	}
	if min <= 0 {
		return c.Signal(ctx, name, value)
	}
	if err := c.check(ctx); err != nil {
		return 0, fmt.Errorf("natscore: signal %q: %w", name, err)
	}
	if err := c.unavailable(); err != nil {
		n, _ := c.local.Signal(ctx, name, value)
		return n, fmt.Errorf("natscore: signal %q: woke %d on this node: %w", name, n, err)
	}
	if _, ok := ctx.Deadline(); !ok && c.opts.Core.DefaultTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Core.DefaultTimeout)
		defer cancel()
	}
	v := append([]byte(nil), value...)
	// This node's parked waiters are woken at once, before any round trip
	// to NATS, as the in-memory Core does: a short deadline that expires
	// during the round trip must not leave them parked.
	total, err := c.local.Signal(ctx, name, v)
	if err != nil {
		return total, fmt.Errorf("natscore: signal %q: %w", name, err)
	}
	id := nuid.Next()
	inbox := c.nc.NewRespInbox()
	reports := make(chan *nats.Msg, 256)
	sub, err := c.nc.ChanSubscribe(inbox, reports)
	if err != nil {
		return total, fmt.Errorf("natscore: signal %q: woke %d on this node: %w: %w", name, total, runner.ErrUnavailable, err)
	}
	defer sub.Unsubscribe()
	peers := c.livePeers()
	if len(peers) > 0 {
		m := nats.NewMsg(c.subject("sal"))
		m.Reply = inbox
		m.Header.Set(hdrOp, "start")
		m.Header.Set(hdrFrom, c.id)
		m.Header.Set(hdrName, name)
		m.Header.Set(hdrID, id)
		if dl, ok := ctx.Deadline(); ok {
			m.Header.Set(hdrCount, strconv.FormatInt(int64(time.Until(dl)), 10))
		}
		m.Data = v
		if err := c.nc.PublishMsg(m); err != nil {
			return total, fmt.Errorf("natscore: signal %q: woke %d on this node: %w", name, total, sendError(err))
		}
	}

	type localResult struct {
		n   int
		err error
	}
	localDone := make(chan localResult, 1)
	var lcancel context.CancelFunc
	localRunning := false
	startLocal := func(need int) {
		var lctx context.Context
		lctx, lcancel = context.WithCancel(ctx)
		localRunning = true
		go func() {
			n, err := c.local.SignalAtLeast(lctx, name, v, need)
			localDone <- localResult{n, err}
		}()
	}
	defer func() {
		if lcancel != nil {
			lcancel()
		}
	}()

	var final error
	stopping := false
	finals := map[string]bool{}
	heard := map[string]bool{}
	stop := func() {
		if stopping {
			return
		}
		stopping = true
		if lcancel != nil {
			lcancel()
		}
		if len(peers) > 0 {
			m := nats.NewMsg(c.subject("sal"))
			m.Header.Set(hdrOp, "stop")
			m.Header.Set(hdrFrom, c.id)
			m.Header.Set(hdrID, id)
			c.nc.PublishMsg(m)
		}
	}
	if total >= min {
		stop()
	} else {
		startLocal(min - total)
	}
	var gatherEnd <-chan time.Time
	done := func() bool {
		if !stopping || localRunning {
			return false
		}
		for p := range peers {
			if !finals[p] {
				return false
			}
		}
		for p := range heard {
			if !finals[p] {
				return false
			}
		}
		return true
	}
	for !done() {
		if stopping && gatherEnd == nil {
			t := time.NewTimer(c.opts.GatherTimeout)
			defer t.Stop()
			gatherEnd = t.C
		}
		select {
		case r := <-reports:
			from := r.Header.Get(hdrFrom)
			n, _ := strconv.Atoi(r.Header.Get(hdrCount))
			heard[from] = true
			total += n
			if r.Header.Get(hdrFinal) != "" {
				finals[from] = true
			}
			if total >= min {
				stop()
			} else if n > 0 && localRunning {
				lcancel() // ask the local part again for what is still needed
			}
		case r := <-localDone:
			localRunning = false
			total += r.n
			switch {
			case stopping:
			case total >= min:
				stop()
			case r.err != nil && ctx.Err() == nil && c.check(context.Background()) == nil:
				startLocal(min - total) // cancelled to ask again
			case r.err != nil:
				final = r.err
				stop()
			default:
				startLocal(min - total)
			}
		case <-ctx.Done():
			if final == nil && total < min {
				final = runner.ContextError(ctx)
			}
			stop()
		case <-c.done:
			if final == nil {
				final = runner.ErrClosed
			}
			stop()
		case <-gatherEnd:
			missing := 0
			for p := range peers {
				if !finals[p] {
					missing++
				}
			}
			c.gatherMisses.Add(1)
			for localRunning {
				r := <-localDone
				localRunning = false
				total += r.n
			}
			err := fmt.Errorf("%d of %d other nodes: %w", missing, len(peers), runner.ErrNodesMissing)
			if final != nil {
				err = fmt.Errorf("%w; %w", final, err)
			}
			return total, fmt.Errorf("natscore: signal %q: %d of %d recipients: %w", name, total, min, err)
		}
	}
	if final != nil && total < min {
		return total, fmt.Errorf("natscore: signal %q: %d of %d recipients: %w", name, total, min, final)
	}
	return total, nil
}

// onSignalAtLeast takes part in another node's SignalAtLeast, or stops
// taking part.
func (c *Core) onSignalAtLeast(m *nats.Msg) {
	id := m.Header.Get(hdrID)
	switch m.Header.Get(hdrOp) {
	case "stop":
		c.mu.Lock()
		s := c.sals[id]
		c.mu.Unlock()
		if s != nil {
			s.cancel()
		}
		return
	case "start":
	default:
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	if d, err := strconv.ParseInt(m.Header.Get(hdrCount), 10, 64); err == nil {
		ctx, cancel = context.WithTimeout(context.Background(), time.Duration(d))
	}
	origin := m.Header.Get(hdrFrom)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		c.answer(m.Reply, id, 0, true)
		return
	}
	c.sals[id] = &sal{origin: origin, cancel: cancel}
	c.mu.Unlock()
	name, value, reply := m.Header.Get(hdrName), m.Data, m.Reply
	c.answer(reply, id, 0, false)
	go func() {
		defer func() {
			cancel()
			c.mu.Lock()
			delete(c.sals, id)
			c.mu.Unlock()
		}()
		for {
			n, err := c.local.SignalAtLeast(ctx, name, value, 1)
			if err != nil {
				c.answer(reply, id, n, true)
				return
			}
			c.answer(reply, id, n, false)
		}
	}()
}

// stopSals ends this node's part in the SignalAtLeast calls of origin (a
// node that left).
func (c *Core) stopSals(origin string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sals {
		if s.origin == origin {
			s.cancel()
		}
	}
}
