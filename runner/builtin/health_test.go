package builtin

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/observe"
)

// observed serves app as paster serve does: instrumented, with a registry
// whose snapshot is *snap.
func observed(t *testing.T, app http.Handler, snap *observe.Snapshot) *httptest.Server {
	reg := observe.New()
	reg.SetSource(func() observe.Snapshot { return *snap })
	srv := httptest.NewServer(observe.Instrument(reg, "main", app))
	t.Cleanup(srv.Close)
	return srv
}

func TestHealth(t *testing.T) {
	t.Parallel()
	h, err := healthFactory(nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	snap := &observe.Snapshot{Generation: 2, Coroutines: []runner.CoroutineStatus{{Name: "db", State: runner.StateRunning, Required: true}}}
	srv := observed(t, h, snap)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, b.String()
	}
	if code, body := get("/live"); code != 200 || body != "ok\n" {
		t.Errorf("/live: %d %q", code, body)
	}
	if code, body := get("/ready"); code != 503 || !strings.Contains(body, "required coroutine db is running") {
		t.Errorf("/ready not ready: %d %q", code, body)
	}
	snap.Coroutines[0].State = runner.StateReady
	if code, body := get("/ready"); code != 200 || body != "ready\n" {
		t.Errorf("/ready: %d %q", code, body)
	}
	code, body := get("/")
	var doc struct {
		Live, Ready bool
		Generation  int
		Coroutines  []struct{ Name, State string }
	}
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil || !doc.Live || !doc.Ready || doc.Generation != 2 || len(doc.Coroutines) != 1 {
		t.Errorf("/: %d %v %s", code, err, body)
	}
	var reloads struct {
		Reloads map[string]any `json:"reloads"`
	}
	json.Unmarshal([]byte(body), &reloads)
	if reloads.Reloads["last"] != "none yet" || reloads.Reloads["last_ok"] != nil {
		t.Errorf("before any reload, reloads = %v; want last \"none yet\" and no last_ok", reloads.Reloads)
	}
	snap.Reloads = observe.Reloads{Total: 1, Last: time.Unix(100, 0), LastOK: true}
	_, body = get("/")
	json.Unmarshal([]byte(body), &reloads)
	if reloads.Reloads["last_ok"] != true || reloads.Reloads["last"] == "none yet" {
		t.Errorf("after a reload, reloads = %v", reloads.Reloads)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
	// Outside paster serve: live, never ready.
	bare := httptest.NewServer(h)
	defer bare.Close()
	resp, err := http.Get(bare.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/ready without a registry: %d", resp.StatusCode)
	}
}

func TestMetricsApp(t *testing.T) {
	t.Parallel()
	m, err := metricsFactory(nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	srv := observed(t, m, &observe.Snapshot{Generation: 1})
	for range 2 {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 1<<16)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	for _, want := range []string{`paster_http_requests_total{app="main",code="200"} 2`, "paster_generation 1", "go_goroutines "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	bare := httptest.NewRecorder()
	m.ServeHTTP(bare, httptest.NewRequest("GET", "/", nil))
	if bare.Code != 503 {
		t.Errorf("without a registry: %d", bare.Code)
	}
}

func TestPprofAllow(t *testing.T) {
	t.Parallel()
	if _, err := pprofFactory(nil, localOf("allow", "not-a-net")); err == nil || !strings.Contains(err.Error(), "test.ini:3") {
		t.Errorf("bad allow: %v", err)
	}
	p, err := pprofFactory(nil, localOf("allow", "10.0.0.0/8, 192.168.1.5"))
	if err != nil {
		t.Fatal(err)
	}
	for remote, want := range map[string]int{"10.1.2.3:5": 200, "192.168.1.5:1": 200, "127.0.0.1:9": 403} {
		req := httptest.NewRequest("GET", "/cmdline", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", remote, rec.Code, want)
		}
	}
	def, _ := pprofFactory(nil, localOf())
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "[::1]:80"
	rec := httptest.NewRecorder()
	def.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "goroutine") {
		t.Errorf("index from loopback: %d", rec.Code)
	}
}

// TestHealthAllow: /health/'s JSON (PIDs, plugin paths, last errors) and
// /ready's reasons go only to clients in allow (default loopback); others
// get "ok" or "not ready" (issue 8.10). The client is ClientAddr, so a
// non-loopback client is simulated as one behind a trusted proxy (the
// prefix filter), the way a real one arrives.
func TestHealthAllow(t *testing.T) {
	t.Parallel()
	const secret = "/srv/secret/plugins/paster-plugin-x token=hunter2"
	snap := &observe.Snapshot{
		Generation: 1,
		Coroutines: []runner.CoroutineStatus{{Name: "db", State: runner.StateFailed, Required: true, LastError: errors.New(secret)}},
		Plugins:    []observe.Plugin{{Dist: "x", Path: "/srv/secret/plugins/paster-plugin-x", PID: 4242, State: "running", Running: true}},
		Reloads:    observe.Reloads{Total: 1, Failed: 1, LastError: secret},
	}
	tests := []struct {
		name   string
		allow  string // "" for the default
		client string // X-Forwarded-For sent through the prefix filter; "" for none (127.0.0.1)
		full   bool
	}{
		{"loopback, default allow", "", "", true},
		{"remote, default allow", "", "203.0.113.7", false},
		{"spoofed loopback from a remote client", "", "127.0.0.1, 203.0.113.7", false},
		{"remote, allowed", "203.0.113.0/24", "203.0.113.7", true},
		{"loopback, not allowed", "10.0.0.0/8", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var local []string
			if tt.allow != "" {
				local = append(local, "allow", tt.allow)
			}
			h, err := healthFactory(nil, localOf(local...))
			if err != nil {
				t.Fatal(err)
			}
			pre, err := prefixFactory(h, nil, localOf())
			if err != nil {
				t.Fatal(err)
			}
			srv := observed(t, pre, snap)
			for _, path := range []string{"/", "/ready", "/live"} {
				req := newRequest(t, "GET", srv.URL+path, nil)
				if tt.client != "" {
					req.Header.Set("X-Forwarded-For", tt.client)
				}
				code, body, _ := do(t, nil, req)
				leaked := strings.Contains(body, "4242") || strings.Contains(body, "/srv/secret") || strings.Contains(body, "hunter2") || strings.Contains(body, "db")
				switch {
				case path == "/live":
					if code != 200 || body != "ok\n" {
						t.Errorf("%s: %d %q", path, code, body)
					}
				case tt.full && !leaked:
					t.Errorf("%s: allowed client got %d %q, want the details", path, code, body)
				case !tt.full && (leaked || code != 503 || body != "not ready\n"):
					t.Errorf("%s: %d %q, want 503 \"not ready\" without details", path, code, body)
				}
			}
		})
	}
	_, err := healthFactory(nil, localOf("allow", "everyone"))
	wantErr(t, err, "allow", `"everyone" is neither a network`)
}

// TestAllowRelayedWithoutPrefix: behind a reverse proxy on the same
// machine (nginx on loopback or on the unix socket, as README's Deploying
// shows) without egg:paster#prefix, every client's peer is the proxy,
// which the default allow list (loopback and unix) lets in: pprof and
// health's details were open to the whole internet. A request carrying
// X-Forwarded-For, Forwarded or X-Real-IP that no prefix filter read was
// relayed for a client whose address is unknown, and is refused now; a
// local caller sending none of them is allowed as before.
func TestAllowRelayedWithoutPrefix(t *testing.T) {
	t.Parallel()
	pp, err := pprofFactory(nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	health, err := healthFactory(nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	mux := mounted(t, map[string]http.Handler{"/pprof": pp, "/health": health})
	snap := &observe.Snapshot{Generation: 1, Plugins: []observe.Plugin{{Dist: "x", Path: "/srv/plugins/paster-plugin-x", PID: 4242, State: "running", Running: true}}}
	srv := observed(t, mux, snap)
	tests := []struct {
		header, value string // "" for a local caller
		allowed       bool
	}{
		{"", "", true},
		{"X-Forwarded-For", "203.0.113.9", false},
		{"X-Forwarded-For", "127.0.0.1", false},
		{"Forwarded", "for=203.0.113.9;proto=https", false},
		{"X-Real-Ip", "203.0.113.9", false},
	}
	for _, tt := range tests {
		get := func(path string) (int, string) {
			req := newRequest(t, "GET", srv.URL+path, nil)
			if tt.header != "" {
				req.Header.Set(tt.header, tt.value)
			}
			code, body, _ := do(t, nil, req)
			return code, body
		}
		want := map[bool]int{true: 200, false: 403}[tt.allowed]
		if code, _ := get("/pprof/cmdline"); code != want {
			t.Errorf("%s: %s: pprof %d, want %d", tt.header, tt.value, code, want)
		}
		if _, body := get("/health/"); strings.Contains(body, "4242") != tt.allowed {
			t.Errorf("%s: %s: health details shown = %v, want %v (%q)", tt.header, tt.value, !tt.allowed, tt.allowed, body)
		}
	}
}
