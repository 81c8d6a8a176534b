package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pluginHealth is one plugin of /health/'s JSON.
type pluginHealth struct {
	Path        string    `json:"path"`
	PID         int       `json:"pid"`
	State       string    `json:"state"`
	NextRestart time.Time `json:"next_restart"`
}

func (p *serveProc) plugins() []pluginHealth {
	p.t.Helper()
	var h struct {
		Plugins []pluginHealth `json:"plugins"`
	}
	code, body := p.get("/health/")
	if code != 200 && code != 503 {
		p.t.Fatalf("GET /health/: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		p.t.Fatalf("GET /health/: %v in %s", err, body)
	}
	return h.Plugins
}

// crashLoop SIGKILLs the plugin process each time it runs until it is in a
// crash loop, and returns its entry then.
func (p *serveProc) crashLoop() pluginHealth {
	p.t.Helper()
	var last pluginHealth
	killed := 0
	p.waitFor("a crash loop", func() bool {
		ps := p.plugins()
		if len(ps) != 1 {
			p.t.Fatalf("want one plugin process, /health/ has %+v", ps)
		}
		last = ps[0]
		if last.State == "running" && last.PID != killed {
			if err := syscall.Kill(last.PID, syscall.SIGKILL); err != nil {
				p.t.Fatal(err)
			}
			killed = last.PID
		}
		return last.State == "crash_loop"
	})
	return last
}

// TestPluginCrashLoopRecovers: a plugin that crashes past the crash-loop
// limit is reported in /health and /metrics, tells clients the real wait,
// comes back by itself after [plugins] crash_loop_cooldown, and a reload
// during a crash loop starts it again at once, saying why.
func TestPluginCrashLoopRecovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyPlugin(t, dir, "")
	port := freePort(t)
	ini := filepath.Join(dir, "dev.ini")
	writeINI(t, ini, iniVars{port: port, shutdown: 5, greeting: "Hello"})
	f, err := os.OpenFile(ini, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "\n[plugins]\ncrash_loop_cooldown = 2s\n")
	f.Close()
	p := startServe(t, dir, port, "dev.ini")

	cl := p.crashLoop()
	if cl.NextRestart.IsZero() {
		t.Fatalf("crash loop without next_restart: %+v", cl)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(p.base + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ra := resp.Header.Get("Retry-After"); resp.StatusCode != http.StatusServiceUnavailable || ra != "1" && ra != "2" {
		t.Fatalf("GET /hello in the crash loop: %d Retry-After %q, want 503 and 1 or 2 (cooldown 2s)", resp.StatusCode, ra)
	}
	_, metrics := p.get("/metrics")
	for _, want := range []string{`state="crash_loop"} 0`, "paster_plugin_next_restart_timestamp_seconds{"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metrics)
		}
	}
	p.waitFor("the plugin back after the cooldown", func() bool {
		code, body := p.get("/hello")
		return code == 200 && strings.Contains(body, "Hello")
	})

	// Crashes within the minute still count: one more is a crash loop
	// again, which a reload ends at once.
	p.crashLoop()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitReload(1)
	if code, _ := p.get("/hello"); code != 200 {
		t.Fatalf("GET /hello after the reload: %d", code)
	}
	if log := p.log.String(); !strings.Contains(log, "plugin process is in a crash loop; the reload starts it again now") || strings.Contains(log, "plugin binary changed") {
		t.Errorf("the reload did not say it restarts the crash-looping plugin:\n%s", log)
	}
}

// TestPluginRunnerCoroutinesInHealth: the ticker coroutine chat's
// hijacked_runner adds to its scheduler in code, inside the chat plugin,
// is listed by /health and /metrics with its state and restarts.
func TestPluginRunnerCoroutinesInHealth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t)
	ini := fmt.Sprintf(`[server:main]
use = egg:chat#hijacked_runner
host = 127.0.0.1
port = %d
tick_interval = 1

[composite:main]
use = egg:paster#urlmap
/health = health
/metrics = metrics

[app:health]
use = egg:paster#health

[app:metrics]
use = egg:paster#metrics
`, port)
	if err := os.WriteFile(filepath.Join(dir, "dev.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, dir, port, "dev.ini")
	var doc struct {
		ServerCoroutines []struct {
			Name     string `json:"name"`
			State    string `json:"state"`
			Restarts int    `json:"restarts"`
		} `json:"server_coroutines"`
	}
	p.waitFor("the ticker in /health's server_coroutines", func() bool {
		_, body := p.get("/health/")
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("/health/: %v in %s", err, body)
		}
		return len(doc.ServerCoroutines) == 1 && doc.ServerCoroutines[0].Name == "ticker" && doc.ServerCoroutines[0].State == "ready"
	})
	_, metrics := p.get("/metrics")
	for _, want := range []string{`paster_server_coroutine_state{coroutine="ticker",state="ready"} 1`, `paster_server_coroutine_restarts_total{coroutine="ticker"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metrics)
		}
	}
}
