package observe

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/paster-dev/paster/runner"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler serves the Registry's metrics as promhttp does: the Prometheus
// text format, or OpenMetrics when the scraper's Accept header asks for it,
// compressed when the scraper accepts gzip. A scrape takes one fresh
// Snapshot. A metric that cannot be gathered answers 500 naming it.
func (r *Registry) Handler() http.Handler { return r.handler }

// snapshotCollector turns the Registry's Snapshot into metrics at each
// scrape: what a generation, the Core and the plugin processes are is
// read from them when asked, never copied into the registry, so nothing
// is registered or left behind as generations come and go.
type snapshotCollector struct{ r *Registry }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	coreParked        = desc("paster_core_parked", "Operations parked on the Core, by kind (waiters: WaitForSignal; fetching: Fetch; pending_signals: SignalAtLeast).", "kind")
	coreSubscriptions = desc("paster_core_subscriptions", "Open pub/sub subscriptions.")
	coreTopics        = desc("paster_core_topics", "Pub/sub topics this Core holds on this machine.")
	coreRetained      = desc("paster_core_retained_messages", "Pub/sub messages retained over all topics.")
	coreConnected     = desc("paster_core_connected", "1 when the Core's connection to the other machines (NATS) is up.")
	corePeers         = desc("paster_core_peers", "Other paster nodes the Core knows alive.")
	coreReconnects    = desc("paster_core_reconnects_total", "Times the Core reconnected to NATS.")
	coreGatherMisses  = desc("paster_core_gather_misses_total", "Signals that did not hear from every live node within gather_timeout.")
	coreCrossNode     = desc("paster_core_cross_node_duration_seconds", "Time a Signal sent here took to hear from every other live node (the NATS round trip and the other nodes' wake-ups); one that missed a node counts in paster_core_gather_misses_total instead.")

	startupCoroutines = coroutineDescs("paster_coroutine", "startup coroutine of the current generation")
	serverCoroutines  = coroutineDescs("paster_server_coroutine", "coroutine the server runner added in code (r.Sched.Add)")

	pluginUp          = desc("paster_plugin_up", "1 for each plugin process in its state (running, restarting, crash_loop, failed, closed); processes of one binary add up.", "dist", "path", "state")
	pluginRestarts    = desc("paster_plugin_restarts_total", "Plugin processes started again after a crash.", "dist", "path")
	pluginNextRestart = desc("paster_plugin_next_restart_timestamp_seconds", "When the next start of a restarting or crash-looping plugin is due.", "dist", "path")
	pluginLogDropped  = desc("paster_plugin_log_lines_dropped_total", "Lines a plugin wrote that were not logged, over the log rate limit ([plugins] log_rate).", "dist", "path")
	pluginPID         = desc("paster_plugin_pid", "Process id of each plugin binary's process serving the newest generation.", "dist", "path")

	generation         = desc("paster_generation", "Number of the current generation (1 for the first load).")
	generationsDrain   = desc("paster_generations_draining", "Older generations still finishing their requests.")
	reloadsTotal       = desc("paster_reloads_total", "Reloads attempted, by result.", "result")
	reloadLastSuccess  = desc("paster_reload_last_success", "1 if the last reload succeeded (or none was tried), 0 if it failed.")
	reloadLastTime     = desc("paster_reload_last_timestamp_seconds", "When the last reload ended (0: none yet).")
	startTime          = desc("paster_start_time_seconds", "When the process began serving.")
	snapshotCollectors = []*prometheus.Desc{
		coreParked, coreSubscriptions, coreTopics, coreRetained, coreConnected, corePeers, coreReconnects, coreGatherMisses, coreCrossNode,
		startupCoroutines.state, startupCoroutines.restarts, serverCoroutines.state, serverCoroutines.restarts,
		pluginUp, pluginRestarts, pluginNextRestart, pluginLogDropped, pluginPID,
		generation, generationsDrain, reloadsTotal, reloadLastSuccess, reloadLastTime, startTime,
	}
)

type coroutineDesc struct{ state, restarts *prometheus.Desc }

// coroutineDescs describes NAME_state and NAME_restarts_total, each of a
// what.
func coroutineDescs(name, what string) coroutineDesc {
	return coroutineDesc{
		state:    desc(name+"_state", "1 for each "+what+" in its state.", "coroutine", "state"),
		restarts: desc(name+"_restarts_total", "Restarts of each "+what+".", "coroutine"),
	}
}

func (c snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range snapshotCollectors {
		ch <- d
	}
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.r.Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if snap.HasCore {
		c := snap.Core
		gauge(coreParked, float64(c.Waiters), "waiters")
		gauge(coreParked, float64(c.Fetching), "fetching")
		gauge(coreParked, float64(c.PendingSignals), "pending_signals")
		gauge(coreSubscriptions, float64(c.Subscriptions))
		gauge(coreTopics, float64(c.Topics))
		gauge(coreRetained, float64(c.Retained))
		if c.Distributed {
			gauge(coreConnected, b2f(c.Connected))
			gauge(corePeers, float64(c.Peers))
			counter(coreReconnects, float64(c.Reconnects))
			counter(coreGatherMisses, float64(c.GatherMisses))
			h := c.CrossNode
			buckets := make(map[float64]uint64, len(h.Bounds))
			for i, b := range h.Bounds {
				buckets[b] = h.Counts[i]
			}
			ch <- prometheus.MustNewConstHistogram(coreCrossNode, h.Count, h.Sum, buckets)
		}
	}
	for _, cs := range []struct {
		d  coroutineDesc
		cs []runner.CoroutineStatus
	}{{startupCoroutines, snap.Coroutines}, {serverCoroutines, snap.ServerCoroutines}} {
		for _, co := range cs.cs {
			gauge(cs.d.state, 1, co.Name, co.State.String())
			counter(cs.d.restarts, float64(co.Restarts), co.Name)
		}
	}
	for _, p := range mergePlugins(snap.Plugins) {
		for _, st := range p.states {
			gauge(pluginUp, float64(p.up[st]), p.Dist, p.Path, st)
		}
		counter(pluginRestarts, float64(p.Restarts), p.Dist, p.Path)
		if !p.NextRestart.IsZero() {
			gauge(pluginNextRestart, unix(p.NextRestart), p.Dist, p.Path)
		}
		counter(pluginLogDropped, float64(p.LogDropped), p.Dist, p.Path)
		gauge(pluginPID, float64(p.PID), p.Dist, p.Path)
	}
	gauge(generation, float64(snap.Generation))
	gauge(generationsDrain, float64(len(snap.Draining)))
	counter(reloadsTotal, float64(snap.Reloads.Total-snap.Reloads.Failed), "ok")
	counter(reloadsTotal, float64(snap.Reloads.Failed), "failed")
	gauge(reloadLastSuccess, b2f(snap.Reloads.Last.IsZero() || snap.Reloads.LastOK))
	gauge(reloadLastTime, unix(snap.Reloads.Last))
	if !snap.Started.IsZero() {
		gauge(startTime, unix(snap.Started))
	}
}

// mergedPlugin is the processes of one binary (dist and path) as one set
// of series: an old generation's process may still drain beside the new
// one's after the binary changed, and a scrape must not hold a series
// twice. Counts add up; PID and NextRestart are the newest generation's
// process's (the earliest restart due, when several are restarting).
type mergedPlugin struct {
	Plugin
	newest int            // newest generation using the process PID is of
	up     map[string]int // processes running, by state
	states []string       // keys of up in the order seen
}

func mergePlugins(ps []Plugin) []*mergedPlugin {
	var out []*mergedPlugin
	at := map[[2]string]*mergedPlugin{}
	for _, p := range ps {
		newest := slices.Max(append([]int{0}, p.Generations...))
		m := at[[2]string{p.Dist, p.Path}]
		if m == nil {
			m = &mergedPlugin{Plugin: p, newest: newest, up: map[string]int{}}
			m.Restarts, m.LogDropped = 0, 0
			at[[2]string{p.Dist, p.Path}] = m
			out = append(out, m)
		} else {
			if newest >= m.newest {
				m.PID, m.newest = p.PID, newest
			}
			if !p.NextRestart.IsZero() && (m.NextRestart.IsZero() || p.NextRestart.Before(m.NextRestart)) {
				m.NextRestart = p.NextRestart
			}
		}
		if _, ok := m.up[p.State]; !ok {
			m.states = append(m.states, p.State)
			m.up[p.State] = 0
		}
		if p.Running {
			m.up[p.State]++
		}
		m.Restarts += p.Restarts
		m.LogDropped += p.LogDropped
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}

// Readiness reports whether the process is ready to take traffic, and
// why not: it must not be shutting down, every required coroutine of the
// current generation must be ready, every plugin process running, and a
// Core spread over several machines connected. A process with no snapshot
// source (nothing serving yet) is not ready.
func (r *Registry) Readiness() (ready bool, reasons []string) {
	if r.source.Load() == nil {
		return false, []string{"no generation loaded"}
	}
	snap := r.Snapshot()
	if snap.Generation == 0 {
		reasons = append(reasons, "no generation loaded")
	}
	if snap.Stopping {
		reasons = append(reasons, "shutting down")
	}
	for i, cs := range [][]runner.CoroutineStatus{snap.Coroutines, snap.ServerCoroutines} {
		kind := [...]string{"coroutine", "server coroutine"}[i]
		for _, c := range cs {
			if c.Required && c.State != runner.StateReady {
				reasons = append(reasons, fmt.Sprintf("required %s %s is %s", kind, c.Name, c.State))
			}
		}
	}
	if snap.HasCore && snap.Core.Distributed && !snap.Core.Connected {
		reasons = append(reasons, "core: not connected to the other nodes (NATS)")
	}
	for _, p := range snap.Plugins {
		if !p.Running && !p.Stopped {
			reasons = append(reasons, fmt.Sprintf("plugin %s (%s) is %s", p.Dist, p.Path, p.State))
		}
	}
	return len(reasons) == 0, reasons
}
