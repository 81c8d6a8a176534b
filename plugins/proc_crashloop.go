package plugins

// The crash-loop policy: backoff between restarts, the limit, the cooldown
// past it, and the wait a turned-away request is told.

import "time"

// crashLoop is the crash-loop policy of one plugin binary: what follows a
// crash of its process. p.mu guards it.
type crashLoop struct {
	backoff     time.Duration // the first restart's delay (HostOptions.RestartBackoff)
	maxRestarts int           // crashes within a minute restarted with backoff; negative: none
	cooldown    time.Duration // the delay past the limit; 0: no restart past it
	crashes     []time.Time   // within the last minute
}

// crash counts a crash at now and says what follows: StateRestarting after
// a backoff that doubles per crash within a minute (up to 10 s) or, past
// maxRestarts crashes within a minute, StateCrashLoop after the cooldown;
// StateFailed (no restart) without a cooldown or with maxRestarts negative.
func (c *crashLoop) crash(now time.Time) (State, time.Duration) {
	recent := c.crashes[:0]
	for _, t := range c.crashes {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	c.crashes = append(recent, now)
	switch {
	case c.maxRestarts < 0:
		return StateFailed, 0
	case len(c.crashes) <= c.maxRestarts:
		return StateRestarting, min(c.backoff<<(len(c.crashes)-1), 10*time.Second)
	case c.cooldown <= 0:
		return StateFailed, 0
	}
	return StateCrashLoop, c.cooldown
}

// crashLocked counts a crash (crashLoop.crash), says what follows, and
// schedules the restart unless the plugin stays failed. p.mu is held.
func (p *proc) crashLocked() {
	now := time.Now()
	state, delay := p.loop.crash(now)
	n := len(p.loop.crashes)
	switch {
	case state == StateFailed && p.loop.maxRestarts < 0:
		p.log.Error("plugin crashed; restarts are off", "path", p.path)
	case state == StateFailed:
		p.log.Error("plugin crashes too often; not restarting it", "path", p.path, "crashes_last_minute", n)
	case state == StateCrashLoop:
		p.log.Error("plugin crashes too often; starting it again after the cooldown", "path", p.path,
			"crashes_last_minute", n, "cooldown", delay)
	}
	if state == StateFailed {
		p.setState(StateFailed)
		return
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
	p.loop.cooldown = s.cooldown
	p.user = s.user
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
