package pastercmd

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
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
	port := testsync.FreePort(t)
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
	before := time.Now()
	resp, err := c.Get(p.base + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after := time.Now()
	// Retry-After is the wait until next_restart, rounded up, as it was
	// while the request was served (unless the machine stalled past it).
	wait := func(at time.Time) int { return max(1, int((cl.NextRestart.Sub(at)+time.Second-1)/time.Second)) }
	got, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if !after.After(cl.NextRestart) && (resp.StatusCode != http.StatusServiceUnavailable || got < wait(after) || got > wait(before)) {
		t.Fatalf("GET /hello in the crash loop: %d Retry-After %q, restart due in %s", resp.StatusCode, resp.Header.Get("Retry-After"), cl.NextRestart.Sub(after))
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
	port := testsync.FreePort(t)
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

// buildPtest builds the plugins package's test plugin (a probe app with
// /flood) and returns its path.
func buildPtest(t *testing.T) string {
	t.Helper()
	out := filepath.Join(binDir, "ptest", "paster-plugin-ptest")
	pluginBuildMu.Lock()
	defer pluginBuildMu.Unlock()
	err, done := pluginBuilt["internal/ptest"]
	if !done {
		cmd := exec.Command("go", "build", "-o", out, "../plugins/internal/testplugin/paster-plugin-ptest")
		if b, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("building the ptest plugin: %v\n%s", berr, b)
		}
		pluginBuilt["internal/ptest"] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPluginLogFlood: a plugin writing lines as fast as it can gets at most
// [plugins] log_rate lines a second into paster's log, the rest is counted
// in /metrics, and the other apps keep serving meanwhile.
func TestPluginLogFlood(t *testing.T) {
	t.Parallel()
	const rate, lines = 100, 20000
	bin := buildPtest(t)
	dir := t.TempDir()
	port := testsync.FreePort(t)
	ini := fmt.Sprintf(`[plugins]
log_rate = %d

[server:main]
use = egg:paster#http
host = 127.0.0.1
port = %d

[composite:main]
use = egg:paster#urlmap
/p = p
/hello = hello
/health = health
/metrics = metrics

[app:health]
use = egg:paster#health

[app:p]
use = plugin:%s#probe
name = flood

[app:hello]
use = egg:hello#main

[app:metrics]
use = egg:paster#metrics
`, rate, port, bin)
	if err := os.WriteFile(filepath.Join(dir, "dev.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p := startServe(t, dir, port, "dev.ini")

	flooded := make(chan int, 1)
	go func() {
		code, _ := p.get(fmt.Sprintf("/p/flood?n=%d", lines))
		flooded <- code
	}()
	served := 0
	for done := false; !done; {
		select {
		case code := <-flooded:
			if code != 200 {
				t.Fatalf("flood: %d", code)
			}
			done = true
		default:
			if code, body := p.get("/hello"); code != 200 {
				t.Fatalf("GET /hello during the flood: %d %s", code, body)
			}
			served++
		}
	}
	dropped := regexp.MustCompile(`paster_plugin_log_lines_dropped_total\{dist="ptest",[^}]*\} (\d+)`)
	var n int
	p.waitFor("every flood line logged or dropped", func() bool {
		_, metrics := p.get("/metrics")
		m := dropped.FindStringSubmatch(metrics)
		if m == nil {
			t.Fatalf("/metrics has no dropped-lines count for ptest:\n%s", metrics)
		}
		n, _ = strconv.Atoi(m[1])
		log := p.log.String()
		return n+strings.Count(log, "flood line ")+strings.Count(log, "long line ") == 3*(lines+1)
	})
	elapsed := time.Since(start)
	logged := 3*(lines+1) - n
	if max := rate + int(rate*elapsed.Seconds()) + 1; logged > max {
		t.Errorf("%d flood lines logged in %s, more than log_rate allows (%d)", logged, elapsed, max)
	}
	if n == 0 || served == 0 {
		t.Errorf("dropped %d, /hello served %d times during the flood", n, served)
	}
}

// TestPluginsKeyErrors: a bad crash_loop_cooldown or log_rate fails check
// and serve with the file, line, section and key.
func TestPluginsKeyErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ key, value string }{
		{"crash_loop_cooldown", "soon"},
		{"crash_loop_cooldown", "-1s"},
		{"log_rate", "lots"},
		{"log_rate", "-3"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ini := fmt.Sprintf("[plugins]\n%s = %s\n\n[server:main]\nuse = egg:paster#http\nport = 0\n\n[app:main]\nuse = egg:hello#main\n", tc.key, tc.value)
			if err := os.WriteFile(filepath.Join(dir, "dev.ini"), []byte(ini), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range [][]string{{"check", "dev.ini"}, {"serve", "dev.ini"}} {
				_, stderr, code := paster(t, dir, cmd...)
				want := fmt.Sprintf("dev.ini:2 [plugins] %s = %q", tc.key, tc.value)
				// serve logs the error as a quoted value.
				if code != 1 || !strings.Contains(strings.ReplaceAll(stderr, `\"`, `"`), want) {
					t.Errorf("paster %s: exit %d, stderr lacks %s:\n%s", cmd[0], code, want, stderr)
				}
			}
		})
	}
}
