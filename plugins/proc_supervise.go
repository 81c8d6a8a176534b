package plugins

// Supervision: the first start, watching a process, restarting it after a
// crash, waiting for it to run, and closing it.

import (
	"context"
	"fmt"
	"time"
)

func (p *proc) startOnce() error {
	p.once.Do(func() {
		g, err := p.launch(true)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			p.startErr = err
			p.setState(StateFailed)
			return
		}
		if p.state == StateClosed {
			g.kill()
			p.startErr = fmt.Errorf("plugin binary %s: %w: host closed while starting", p.path, ErrUnavailable)
			return
		}
		p.cur = g
		p.setState(StateRunning)
		p.watch(g)
	})
	return p.startErr
}

// setState changes the state and wakes waiters; p.mu is held.
func (p *proc) setState(s State) {
	p.state = s
	close(p.changed)
	p.changed = make(chan struct{})
}

// watch waits for g's process to exit and restarts it unless that was
// expected. p.mu is held.
func (p *proc) watch(g *incarnation) {
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		<-g.exited
		killGroup(g.pid)
		p.mu.Lock()
		if p.cur != g || p.state == StateClosed {
			p.mu.Unlock()
			return
		}
		p.log.Error("plugin process exited unexpectedly", "path", p.path, "pid", g.pid)
		p.cur = nil
		p.crashLocked()
		p.mu.Unlock()
	}()
}

func (p *proc) restart(delay time.Duration) {
	defer p.bg.Done()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.closing:
		return
	}
	if gate := p.h.restartGate; gate != nil {
		select {
		case <-gate:
		case <-p.closing:
			return
		}
	}
	p.mu.Lock()
	p.nextStart = time.Time{}
	p.mu.Unlock()
	g, err := p.launch(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if p.state == StateClosed {
			return
		}
		p.cur = nil
		p.log.Error("restarting plugin failed", "path", p.path, "error", err)
		p.crashLocked()
		return
	}
	if p.state == StateClosed {
		g.kill()
		return
	}
	p.cur = g
	p.restarts++
	p.setState(StateRunning)
	p.watch(g)
}

// waitRunning waits until the plugin runs; it fails when it is closed or
// failed, and returns ctx's error when ctx ends first.
func (p *proc) waitRunning(ctx context.Context) (*incarnation, error) {
	for {
		p.mu.Lock()
		st, g, ch := p.state, p.cur, p.changed
		p.mu.Unlock()
		switch {
		case st == StateRunning:
			return g, nil
		case !st.waiting():
			return nil, fmt.Errorf("plugin binary %s: %w (%s)", p.path, ErrUnavailable, st)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

func (p *proc) close(ctx context.Context) error {
	p.mu.Lock()
	if p.state == StateClosed {
		p.mu.Unlock()
		return nil
	}
	p.setState(StateClosed)
	close(p.closing)
	var drained chan struct{}
	if p.inflight > 0 {
		drained = make(chan struct{})
		p.drained = drained
	}
	g := p.cur
	p.mu.Unlock()

	var err error
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			err = fmt.Errorf("plugin %s: draining requests: %w", p.name, ctx.Err())
		}
	}
	// Running servers and coroutines were asked to stop by closing; wait.
	runsDone := make(chan struct{})
	go func() { p.runs.Wait(); close(runsDone) }()
	select {
	case <-runsDone:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("plugin %s: stopping servers and coroutines: %w", p.name, ctx.Err())
		}
	}
	p.runCancel()
	if g != nil {
		g.kill()
		<-g.exited
		killGroup(g.pid)
	}
	<-runsDone
	p.bg.Wait()
	p.relay.stop()
	return err
}
