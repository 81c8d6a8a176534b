package plugins

// The crash-loop policy: backoff between restarts, the limit, the cooldown
// past it, and the wait a turned-away request is told.

import "time"

// crashLocked counts a crash and schedules the restart: after a backoff
// that doubles per crash within a minute (up to 10 s), or, past the
// crash-loop limit, after the cooldown; without a cooldown (or with
// MaxRestarts negative) the plugin stays failed. p.mu is held.
func (p *proc) crashLocked() {
	now := time.Now()
	recent := p.crashes[:0]
	for _, t := range p.crashes {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	p.crashes = append(recent, now)
	if p.h.opts.MaxRestarts < 0 {
		p.log.Error("plugin crashed; restarts are off", "path", p.path)
		p.setState(StateFailed)
		return
	}
	state, delay := StateRestarting, min(p.h.opts.RestartBackoff<<(len(p.crashes)-1), 10*time.Second)
	if len(p.crashes) > p.h.opts.MaxRestarts {
		if p.cooldown <= 0 {
			p.log.Error("plugin crashes too often; not restarting it", "path", p.path, "crashes_last_minute", len(p.crashes))
			p.setState(StateFailed)
			return
		}
		state, delay = StateCrashLoop, p.cooldown
		p.log.Error("plugin crashes too often; starting it again after the cooldown", "path", p.path,
			"crashes_last_minute", len(p.crashes), "cooldown", p.cooldown)
	}
	p.nextStart = now.Add(delay)
	p.setState(state)
	p.bg.Add(1)
	go p.restart(delay)
}

// configure applies the [plugins] settings (the configuration loaded last
// wins).
func (p *proc) configure(s procSettings) {
	p.mu.Lock()
	p.cooldown = s.cooldown
	p.mu.Unlock()
	p.relay.setRate(s.logRate)
}

// retryAfter is the Retry-After value, in seconds, for a request turned
// away while a restart is due: the time until the restart is tried,
// rounded up, and at least 1 (a restart under way).
func (p *proc) retryAfter() int {
	p.mu.Lock()
	next := p.nextStart
	p.mu.Unlock()
	return max(1, int((time.Until(next)+time.Second-1)/time.Second))
}
