package observe

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/paster-dev/paster/runner"
)

// ContentType is the media type of WritePrometheus's output.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WritePrometheus writes the registry's metrics and a fresh Snapshot in the
// Prometheus text exposition format (version 0.0.4). Every metric is named
// paster_*; the errors returned are w's.
func (r *Registry) WritePrometheus(w io.Writer) error {
	var b strings.Builder
	snap := r.Snapshot()

	help(&b, "paster_http_requests_total", "counter", "Requests served, by app and status code.")
	r.mu.Lock()
	names := r.appNames()
	for _, app := range names {
		a := r.apps[app]
		codes := make([]string, 0, len(a.codes))
		for c := range a.codes {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for _, c := range codes {
			fmt.Fprintf(&b, "paster_http_requests_total{app=%s,code=%s} %d\n", quote(app), quote(c), a.codes[c])
		}
	}
	help(&b, "paster_http_request_duration_seconds", "histogram", "Request latency, by app (long-polls included).")
	for _, app := range names {
		a := r.apps[app]
		var cum uint64
		for i, le := range Buckets {
			cum += a.buckets[i]
			fmt.Fprintf(&b, "paster_http_request_duration_seconds_bucket{app=%s,le=%s} %d\n", quote(app), quote(strconv.FormatFloat(le, 'g', -1, 64)), cum)
		}
		fmt.Fprintf(&b, "paster_http_request_duration_seconds_bucket{app=%s,le=\"+Inf\"} %d\n", quote(app), a.count)
		fmt.Fprintf(&b, "paster_http_request_duration_seconds_sum{app=%s} %g\n", quote(app), a.sum)
		fmt.Fprintf(&b, "paster_http_request_duration_seconds_count{app=%s} %d\n", quote(app), a.count)
	}
	r.mu.Unlock()

	help(&b, "paster_http_requests_in_flight", "gauge", "Requests being served.")
	fmt.Fprintf(&b, "paster_http_requests_in_flight %d\n", r.InFlight())

	if snap.HasCore {
		help(&b, "paster_core_parked", "gauge", "Operations parked on the Core, by kind (waiters: WaitForSignal; fetching: Fetch; pending_signals: SignalAtLeast).")
		fmt.Fprintf(&b, "paster_core_parked{kind=\"waiters\"} %d\n", snap.Core.Waiters)
		fmt.Fprintf(&b, "paster_core_parked{kind=\"fetching\"} %d\n", snap.Core.Fetching)
		fmt.Fprintf(&b, "paster_core_parked{kind=\"pending_signals\"} %d\n", snap.Core.PendingSignals)
		help(&b, "paster_core_subscriptions", "gauge", "Open pub/sub subscriptions.")
		fmt.Fprintf(&b, "paster_core_subscriptions %d\n", snap.Core.Subscriptions)
		help(&b, "paster_core_topics", "gauge", "Pub/sub topics ever used.")
		fmt.Fprintf(&b, "paster_core_topics %d\n", snap.Core.Topics)
		help(&b, "paster_core_retained_messages", "gauge", "Pub/sub messages retained over all topics.")
		fmt.Fprintf(&b, "paster_core_retained_messages %d\n", snap.Core.Retained)
		if c := snap.Core; c.Distributed {
			help(&b, "paster_core_connected", "gauge", "1 when the Core's connection to the other machines (NATS) is up.")
			fmt.Fprintf(&b, "paster_core_connected %d\n", b2i(c.Connected))
			help(&b, "paster_core_peers", "gauge", "Other paster nodes the Core knows alive.")
			fmt.Fprintf(&b, "paster_core_peers %d\n", c.Peers)
			help(&b, "paster_core_reconnects_total", "counter", "Times the Core reconnected to NATS.")
			fmt.Fprintf(&b, "paster_core_reconnects_total %d\n", c.Reconnects)
			help(&b, "paster_core_gather_misses_total", "counter", "Signals that did not hear from every live node within gather_timeout.")
			fmt.Fprintf(&b, "paster_core_gather_misses_total %d\n", c.GatherMisses)
		}
	}

	coroutineMetrics(&b, "paster_coroutine", "startup coroutine of the current generation", snap.Coroutines)
	coroutineMetrics(&b, "paster_server_coroutine", "coroutine the server runner added in code (r.Sched.Add)", snap.ServerCoroutines)

	help(&b, "paster_plugin_up", "gauge", "1 for each plugin process in its state (running, restarting, crash_loop, failed, closed).")
	for _, p := range snap.Plugins {
		fmt.Fprintf(&b, "paster_plugin_up{dist=%s,path=%s,state=%s} %d\n", quote(p.Dist), quote(p.Path), quote(p.State), b2i(p.State == "running"))
	}
	help(&b, "paster_plugin_restarts_total", "counter", "Plugin processes started again after a crash.")
	for _, p := range snap.Plugins {
		fmt.Fprintf(&b, "paster_plugin_restarts_total{dist=%s,path=%s} %d\n", quote(p.Dist), quote(p.Path), p.Restarts)
	}
	help(&b, "paster_plugin_next_restart_timestamp_seconds", "gauge", "When the next start of a restarting or crash-looping plugin is due.")
	for _, p := range snap.Plugins {
		if !p.NextRestart.IsZero() {
			fmt.Fprintf(&b, "paster_plugin_next_restart_timestamp_seconds{dist=%s,path=%s} %d\n", quote(p.Dist), quote(p.Path), unix(p.NextRestart))
		}
	}
	help(&b, "paster_plugin_log_lines_dropped_total", "counter", "Lines a plugin wrote that were not logged, over the log rate limit ([plugins] log_rate).")
	for _, p := range snap.Plugins {
		fmt.Fprintf(&b, "paster_plugin_log_lines_dropped_total{dist=%s,path=%s} %d\n", quote(p.Dist), quote(p.Path), p.LogDropped)
	}
	help(&b, "paster_plugin_pid", "gauge", "Process id of each plugin process.")
	for _, p := range snap.Plugins {
		fmt.Fprintf(&b, "paster_plugin_pid{dist=%s,path=%s} %d\n", quote(p.Dist), quote(p.Path), p.PID)
	}

	help(&b, "paster_generation", "gauge", "Number of the current generation (1 for the first load).")
	fmt.Fprintf(&b, "paster_generation %d\n", snap.Generation)
	help(&b, "paster_generations_draining", "gauge", "Older generations still finishing their requests.")
	fmt.Fprintf(&b, "paster_generations_draining %d\n", len(snap.Draining))
	help(&b, "paster_reloads_total", "counter", "Reloads attempted, by result.")
	fmt.Fprintf(&b, "paster_reloads_total{result=\"ok\"} %d\n", snap.Reloads.Total-snap.Reloads.Failed)
	fmt.Fprintf(&b, "paster_reloads_total{result=\"failed\"} %d\n", snap.Reloads.Failed)
	help(&b, "paster_reload_last_success", "gauge", "1 if the last reload succeeded (or none was tried), 0 if it failed.")
	fmt.Fprintf(&b, "paster_reload_last_success %d\n", b2i(snap.Reloads.Last.IsZero() || snap.Reloads.LastOK))
	help(&b, "paster_reload_last_timestamp_seconds", "gauge", "When the last reload ended (0: none yet).")
	fmt.Fprintf(&b, "paster_reload_last_timestamp_seconds %d\n", unix(snap.Reloads.Last))
	if !snap.Started.IsZero() {
		help(&b, "paster_start_time_seconds", "gauge", "When the process began serving.")
		fmt.Fprintf(&b, "paster_start_time_seconds %d\n", unix(snap.Started))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// coroutineMetrics writes NAME_state and NAME_restarts_total for cs, each
// a what.
func coroutineMetrics(b *strings.Builder, name, what string, cs []runner.CoroutineStatus) {
	help(b, name+"_state", "gauge", "1 for each "+what+" in its state.")
	for _, c := range cs {
		fmt.Fprintf(b, "%s_state{coroutine=%s,state=%s} 1\n", name, quote(c.Name), quote(c.State.String()))
	}
	help(b, name+"_restarts_total", "counter", "Restarts of each "+what+".")
	for _, c := range cs {
		fmt.Fprintf(b, "%s_restarts_total{coroutine=%s} %d\n", name, quote(c.Name), c.Restarts)
	}
}

func help(b *strings.Builder, name, typ, text string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, typ)
}

// quote quotes a label value: backslash, double quote and newline escaped.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
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
			if c.Required && c.State.String() != "ready" {
				reasons = append(reasons, fmt.Sprintf("required %s %s is %s", kind, c.Name, c.State))
			}
		}
	}
	if snap.HasCore && snap.Core.Distributed && !snap.Core.Connected {
		reasons = append(reasons, "core: not connected to the other nodes (NATS)")
	}
	for _, p := range snap.Plugins {
		if p.State != "running" && p.State != "closed" {
			reasons = append(reasons, fmt.Sprintf("plugin %s (%s) is %s", p.Dist, p.Path, p.State))
		}
	}
	return len(reasons) == 0, reasons
}
