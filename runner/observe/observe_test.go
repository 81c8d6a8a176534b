package observe

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/runner"
)

func TestInstrumentAndExposition(t *testing.T) {
	t.Parallel()
	r := New()
	app := Instrument(r, "main", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if From(req.Context()) != r {
			t.Error("no registry in the request context")
		}
		if strings.HasPrefix(req.URL.Path, "/sub") {
			SetApp(req.Context(), "/sub")
		}
		if req.URL.Path == "/missing" {
			http.NotFound(w, req)
			return
		}
		io.WriteString(w, "ok")
	}))
	for _, p := range []string{"/", "/", "/missing", "/sub/x"} {
		app.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	r.SetSource(func() Snapshot {
		return Snapshot{
			Generation: 3, Draining: []int{2},
			Coroutines:       []runner.CoroutineStatus{{Name: "tick", State: runner.StateReady, Restarts: 2}},
			ServerCoroutines: []runner.CoroutineStatus{{Name: "clock", State: runner.StateBackoff, Restarts: 9}},
			HasCore:          true, Core: runner.CoreStats{Waiters: 5},
			Plugins: []Plugin{{Dist: "hello", Path: `/p/a"b`, PID: 42, State: "running", Restarts: 1},
				{Dist: "crashy", Path: "/p/c", State: "crash_loop", NextRestart: time.Unix(200, 0), LogDropped: 7}},
			Reloads: Reloads{Total: 4, Failed: 1, Last: time.Unix(100, 0), LastOK: false, LastError: "x"},
		}
	})
	var b strings.Builder
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`paster_http_requests_total{app="main",code="200"} 2`,
		`paster_http_requests_total{app="main",code="404"} 1`,
		`paster_http_requests_total{app="/sub",code="200"} 1`,
		`paster_http_request_duration_seconds_count{app="main"} 3`,
		`paster_http_request_duration_seconds_bucket{app="main",le="+Inf"} 3`,
		"paster_http_requests_in_flight 0",
		`paster_core_parked{kind="waiters"} 5`,
		`paster_coroutine_state{coroutine="tick",state="ready"} 1`,
		`paster_coroutine_restarts_total{coroutine="tick"} 2`,
		`paster_server_coroutine_state{coroutine="clock",state="backoff"} 1`,
		`paster_server_coroutine_restarts_total{coroutine="clock"} 9`,
		`paster_plugin_up{dist="hello",path="/p/a\"b",state="running"} 1`,
		`paster_plugin_restarts_total{dist="hello",path="/p/a\"b"} 1`,
		`paster_plugin_up{dist="crashy",path="/p/c",state="crash_loop"} 0`,
		`paster_plugin_next_restart_timestamp_seconds{dist="crashy",path="/p/c"} 200`,
		`paster_plugin_log_lines_dropped_total{dist="crashy",path="/p/c"} 7`,
		"paster_generation 3",
		"paster_generations_draining 1",
		`paster_reloads_total{result="ok"} 3`,
		`paster_reloads_total{result="failed"} 1`,
		"paster_reload_last_success 0",
		"paster_reload_last_timestamp_seconds 100",
		"# TYPE paster_http_request_duration_seconds histogram",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	// Every sample line is NAME{...} VALUE or NAME VALUE.
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); len(f) < 2 || !strings.HasPrefix(f[0], "paster_") {
			t.Errorf("malformed sample %q", line)
		}
	}
}

func TestLabelsBounded(t *testing.T) {
	t.Parallel()
	r := New()
	for i := range MaxApps + 10 {
		r.Observe(fmt.Sprintf("app%d", i), 200, time.Millisecond)
	}
	r.Observe("x", 999, time.Millisecond)
	var b strings.Builder
	r.WritePrometheus(&b)
	if n := strings.Count(b.String(), "paster_http_request_duration_seconds_count{"); n != MaxApps+1 {
		t.Errorf("%d app label sets, want %d (MaxApps + other)", n, MaxApps+1)
	}
	if !strings.Contains(b.String(), `app="other",code="other"`) {
		t.Error("overflow not counted under other")
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	r := New()
	if ok, why := r.Readiness(); ok || len(why) == 0 {
		t.Errorf("without a source: ready %v %v", ok, why)
	}
	snap := Snapshot{Generation: 1, Coroutines: []runner.CoroutineStatus{
		{Name: "db", State: runner.StateRunning, Required: true, LastError: errors.New("x")},
		{Name: "opt", State: runner.StateFailed},
	}, Plugins: []Plugin{{Dist: "chat", Path: "/c", State: "restarting"}}}
	r.SetSource(func() Snapshot { return snap })
	ok, why := r.Readiness()
	if ok || len(why) != 2 || !strings.Contains(why[0], "db") || !strings.Contains(why[1], "chat") {
		t.Errorf("ready %v, reasons %q", ok, why)
	}
	snap.Coroutines[0].State = runner.StateReady
	snap.Plugins[0].State = "running"
	if ok, why := r.Readiness(); !ok {
		t.Errorf("not ready: %q", why)
	}
	snap.ServerCoroutines = []runner.CoroutineStatus{{Name: "clock", State: runner.StateBackoff, Required: true}}
	if ok, why := r.Readiness(); ok || len(why) != 1 || !strings.Contains(why[0], "server coroutine clock") {
		t.Errorf("a required server coroutine in backoff: ready %v, reasons %q", ok, why)
	}
	snap.ServerCoroutines = nil
	snap.Stopping = true
	if ok, _ := r.Readiness(); ok {
		t.Error("ready while stopping")
	}
}

// TestDistributedCore: a Core spread over machines that lost its connection
// makes the process not ready, and /metrics shows its connection state,
// peers, reconnects and gather misses.
func TestDistributedCore(t *testing.T) {
	t.Parallel()
	r := New()
	snap := Snapshot{Generation: 1, HasCore: true, Core: runner.CoreStats{Distributed: true, Connected: false, Peers: 2, Reconnects: 3, GatherMisses: 4}}
	r.SetSource(func() Snapshot { return snap })
	ok, why := r.Readiness()
	if ok || len(why) != 1 || !strings.Contains(why[0], "core") {
		t.Errorf("disconnected core: ready %v, reasons %q", ok, why)
	}
	var b strings.Builder
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"paster_core_connected 0\n", "paster_core_peers 2\n", "paster_core_reconnects_total 3\n", "paster_core_gather_misses_total 4\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	snap.Core.Connected = true
	if ok, why := r.Readiness(); !ok {
		t.Errorf("connected core: not ready: %q", why)
	}
	snap.Core = runner.CoreStats{}
	b.Reset()
	r.WritePrometheus(&b)
	if strings.Contains(b.String(), "paster_core_connected") {
		t.Error("an in-memory core shows a connection state")
	}
}
