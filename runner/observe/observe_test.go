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
	serveCounted(Instrument(r, "main", countedApp(t, r, nil)))
	r.SetSource(func() Snapshot {
		return Snapshot{
			Generation: 3, Draining: []int{2},
			Coroutines:       []runner.CoroutineStatus{{Name: "tick", State: runner.StateReady, Restarts: 2}},
			ServerCoroutines: []runner.CoroutineStatus{{Name: "clock", State: runner.StateBackoff, Restarts: 9}},
			HasCore:          true, Core: runner.CoreStats{Waiters: 5},
			Plugins: []Plugin{{Dist: "hello", Path: `/p/a"b`, PID: 42, State: "running", Running: true, Restarts: 1},
				{Dist: "crashy", Path: "/p/c", State: "crash_loop", NextRestart: time.Unix(200, 0), LogDropped: 7}},
			Reloads: Reloads{Total: 4, Failed: 1, Last: time.Unix(100, 0), LastOK: false, LastError: "x"},
		}
	})
	out := scrape(t, r)
	for _, want := range append(countedWant,
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
	) {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	// Every sample line is NAME{...} VALUE or NAME VALUE, paster's own or
	// the Go runtime's and process's collectors'.
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || !(strings.HasPrefix(f[0], "paster_") || strings.HasPrefix(f[0], "go_") || strings.HasPrefix(f[0], "process_")) {
			t.Errorf("malformed sample %q", line)
		}
	}
	for _, want := range []string{"\ngo_goroutines ", "\ngo_memstats_heap_alloc_bytes ", "\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes "} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks the runtime's or process's %s", strings.TrimSpace(want))
		}
	}
}

// TestOpenMetrics: a scraper that asks for OpenMetrics gets it (counters'
// families named without _total, the closing # EOF); one that does not gets
// the Prometheus text format.
func TestOpenMetrics(t *testing.T) {
	t.Parallel()
	r := New()
	r.Observe("main", 200, time.Millisecond)
	tests := []struct {
		accept, contentType string
		want                []string
	}{
		{"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", "application/openmetrics-text; version=1.0.0",
			[]string{"# TYPE paster_http_requests counter\n", `paster_http_requests_total{app="main",code="200"} 1`, "\n# EOF\n"}},
		{"", "text/plain; version=0.0.4",
			[]string{"# TYPE paster_http_requests_total counter\n", `paster_http_requests_total{app="main",code="200"} 1`}},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "/metrics", nil)
		if tt.accept != "" {
			req.Header.Set("Accept", tt.accept)
		}
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, req)
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
			t.Errorf("Accept %q: Content-Type %q, want %s", tt.accept, ct, tt.contentType)
		}
		for _, want := range tt.want {
			if !strings.Contains(rec.Body.String(), want) {
				t.Errorf("Accept %q: body lacks %q", tt.accept, want)
			}
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
	out := scrape(t, r)
	if n := strings.Count(out, "paster_http_request_duration_seconds_count{"); n != MaxApps+1 {
		t.Errorf("%d app label sets, want %d (MaxApps + other)", n, MaxApps+1)
	}
	if !strings.Contains(out, `app="other",code="other"`) {
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
	snap.Plugins[0].State, snap.Plugins[0].Running = "running", true
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
// peers, reconnects, gather misses and cross-node latency.
func TestDistributedCore(t *testing.T) {
	t.Parallel()
	r := New()
	snap := Snapshot{Generation: 1, HasCore: true, Core: runner.CoreStats{Distributed: true, Connected: false, Peers: 2, Reconnects: 3, GatherMisses: 4,
		CrossNode: runner.Histogram{Bounds: []float64{0.001, 0.01}, Counts: []uint64{5, 7}, Count: 8, Sum: 0.5}}}
	r.SetSource(func() Snapshot { return snap })
	ok, why := r.Readiness()
	if ok || len(why) != 1 || !strings.Contains(why[0], "core") {
		t.Errorf("disconnected core: ready %v, reasons %q", ok, why)
	}
	out := scrape(t, r)
	for _, want := range []string{"paster_core_connected 0\n", "paster_core_peers 2\n", "paster_core_reconnects_total 3\n", "paster_core_gather_misses_total 4\n",
		`paster_core_cross_node_duration_seconds_bucket{le="0.001"} 5` + "\n", `paster_core_cross_node_duration_seconds_bucket{le="0.01"} 7` + "\n",
		`paster_core_cross_node_duration_seconds_bucket{le="+Inf"} 8` + "\n", "paster_core_cross_node_duration_seconds_sum 0.5\n", "paster_core_cross_node_duration_seconds_count 8\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	snap.Core.Connected = true
	if ok, why := r.Readiness(); !ok {
		t.Errorf("connected core: not ready: %q", why)
	}
	snap.Core = runner.CoreStats{}
	if strings.Contains(scrape(t, r), "paster_core_connected") {
		t.Error("an in-memory core shows a connection state")
	}
}

// TestNoDuplicateSeries: two processes of one plugin binary (an old
// generation's still draining beside the new one's after the binary
// changed) share dist and path; /metrics still has each series once, as
// Prometheus rejects a scrape with a duplicate sample. Counters add up, the
// pid is the newest generation's.
func TestNoDuplicateSeries(t *testing.T) {
	t.Parallel()
	r := New()
	r.SetSource(func() Snapshot {
		return Snapshot{Generation: 2, Draining: []int{1}, Plugins: []Plugin{
			{Dist: "hello", Path: "/p/hello", PID: 10, State: "running", Running: true, Restarts: 1, LogDropped: 2, Generations: []int{1}},
			{Dist: "hello", Path: "/p/hello", PID: 20, State: "running", Running: true, Restarts: 3, LogDropped: 4, Generations: []int{2}},
		}}
	})
	out := scrape(t, r)
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		series := line[:strings.LastIndexByte(line, ' ')]
		if seen[series] {
			t.Errorf("series %s appears twice", series)
		}
		seen[series] = true
	}
	for _, want := range []string{
		`paster_plugin_up{dist="hello",path="/p/hello",state="running"} 2`,
		`paster_plugin_restarts_total{dist="hello",path="/p/hello"} 4`,
		`paster_plugin_log_lines_dropped_total{dist="hello",path="/p/hello"} 6`,
		`paster_plugin_pid{dist="hello",path="/p/hello"} 20`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("exposition lacks %s", want)
		}
	}
}

// scrape returns r's exposition in the Prometheus text format, as its
// Handler serves it.
func scrape(t *testing.T, r *Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// countedApp answers the requests serveCounted sends, checking that the
// request's context has r, and check's conditions if not nil: 200 but
// 404 for /missing, counted under the app "/sub" for /sub/x (SetApp).
func countedApp(t *testing.T, r *Registry, check func(*http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if From(req.Context()) != r {
			t.Error("no registry in the request context")
		}
		if check != nil {
			check(req)
		}
		if strings.HasPrefix(req.URL.Path, "/sub") {
			SetApp(req.Context(), "/sub")
		}
		if req.URL.Path == "/missing" {
			http.NotFound(w, req)
			return
		}
		io.WriteString(w, "ok")
	})
}

// countedWant is what the exposition shows after serveCounted.
var countedWant = []string{
	`paster_http_requests_total{app="main",code="200"} 2`,
	`paster_http_requests_total{app="main",code="404"} 1`,
	`paster_http_requests_total{app="/sub",code="200"} 1`,
	`paster_http_request_duration_seconds_count{app="main"} 3`,
	`paster_http_request_duration_seconds_bucket{app="main",le="+Inf"} 3`,
	"paster_http_requests_in_flight 0",
}

// serveCounted sends h GET /, /, /missing and /sub/x.
func serveCounted(h http.Handler) {
	for _, p := range []string{"/", "/", "/missing", "/sub/x"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
}

// TestInstrumentUnderMount: under the Mount paster serve puts it in,
// Instrument attaches its request state to the Mount's request context
// instead of making one (runner.Attach); From, SetApp and the counts work
// the same, and the handler's context is still the Mount's (its Core).
func TestInstrumentUnderMount(t *testing.T) {
	t.Parallel()
	core := runner.NewCore(runner.CoreOptions{})
	defer core.Close()
	r := New()
	var m *runner.Mount
	m = runner.NewMount(Instrument(r, "main", countedApp(t, r, func(req *http.Request) {
		if runner.CoreFrom(req.Context()) != runner.Core(m.Scope()) {
			t.Error("the request's Core is not the Mount's scope")
		}
	})), core, nil)
	serveCounted(runner.NewFront(m))
	out := scrape(t, r)
	for _, want := range countedWant {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}
