package plugins

// A plugin binary's state and what Host.Plugins reports of it.

// State is the state of a plugin binary's process (PluginInfo.State).
type State int

// The states of a plugin process.
const (
	StateNew        State = iota // not started yet
	StateRunning                 // serving
	StateRestarting              // crashed; a restart with backoff is due
	StateCrashLoop               // past the crash-loop limit: restarted after the cooldown
	StateFailed                  // not restarted any more
	StateClosed                  // stopped by Host.Close
)

// String returns the state's name as /health and /metrics show it:
// "new", "running", "restarting", "crash_loop", "failed" or "closed".
func (s State) String() string {
	return [...]string{"new", "running", "restarting", "crash_loop", "failed", "closed"}[s]
}

// waiting reports whether a process is to be started in state s: requests
// are told to retry and Run loops wait for it.
func (s State) waiting() bool {
	return s == StateNew || s == StateRestarting || s == StateCrashLoop
}

func (p *proc) info() PluginInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := PluginInfo{Path: p.path, Dist: p.manifest.Name, Version: p.manifest.Version, State: p.state, Restarts: p.restarts, Instances: len(p.specs), NextRestart: p.nextStart, LogDropped: p.relay.dropped.Load()}
	if p.cur != nil {
		i.PID = p.cur.pid
	}
	return i
}
