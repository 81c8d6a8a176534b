package pastercmd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// These tests run the paster binary TestMain built, with real plugin
// processes, sockets and signals. They wait by polling with a bound, never by
// sleeping, and no timing decides pass or fail.

var (
	pluginBuildMu sync.Mutex
	pluginBuilt   = map[string]error{}
)

// buildPlugin builds examples/NAME's plugin next to the hello plugin, once.
func buildPlugin(t *testing.T, name string) {
	t.Helper()
	pluginBuildMu.Lock()
	defer pluginBuildMu.Unlock()
	err, done := pluginBuilt[name]
	if !done {
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, "plugins")+"/", "../examples/"+name+"/cmd/paster-plugin-"+name)
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("building %s: %v\n%s", name, berr, out)
		}
		pluginBuilt[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// serveProc is a running "paster serve".
type serveProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string // http://127.0.0.1:PORT
	// dial, if set, makes the connections of get (to a unix socket).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	log  *testsync.Buffer
	done chan error
}

// startServe starts paster serve in dir and waits until /health/live
// answers on port.
func startServe(t *testing.T, dir string, port int, args ...string) *serveProc {
	t.Helper()
	return startServeExe(t, filepath.Join(binDir, "paster"), dir, port, args...)
}

// startServeExe is startServe with the paster executable exe.
func startServeExe(t *testing.T, exe, dir string, port int, args ...string) *serveProc {
	t.Helper()
	p := spawnServeExe(t, exe, dir, port, args...)
	p.waitFor("the server to answer", func() bool {
		code, _ := p.get("/health/live")
		return code == 200
	})
	return p
}

// spawnServe starts paster serve in dir; it is stopped with SIGTERM when
// the test ends.
func spawnServe(t *testing.T, dir string, port int, args ...string) *serveProc {
	t.Helper()
	return spawnServeExe(t, filepath.Join(binDir, "paster"), dir, port, args...)
}

// spawnServeExe is spawnServe with the paster executable exe.
func spawnServeExe(t *testing.T, exe, dir string, port int, args ...string) *serveProc {
	t.Helper()
	cmd := exec.Command(exe, append([]string{"serve"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PASTER_PLUGIN_PATH=")
	return spawnCmd(t, cmd, fmt.Sprintf("http://127.0.0.1:%d", port))
}

// spawnCmd starts cmd, a paster serve answering at base; it is stopped
// with SIGTERM when the test ends.
func spawnCmd(t *testing.T, cmd *exec.Cmd, base string) *serveProc {
	t.Helper()
	p := &serveProc{t: t, cmd: cmd, base: base, log: &testsync.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("paster serve log:\n%s", p.log.String())
		}
	})
	return p
}

// get fetches path on a fresh connection and returns status and body
// (status 0 on a transport error).
func (p *serveProc) get(path string) (int, string) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: p.dial}}
	resp, err := c.Get(p.base + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond (testsync.WaitFor), failing at once if paster serve
// exits meanwhile.
func (p *serveProc) waitFor(what string, cond func() bool) {
	p.t.Helper()
	testsync.WaitFor(p.t, what, func() bool {
		select {
		case err := <-p.done:
			p.done <- err
			p.t.Fatalf("paster serve exited (%v) while waiting for %s", err, what)
		default:
		}
		return cond()
	})
}

type healthDoc struct {
	Ready      bool `json:"ready"`
	Generation int  `json:"generation"`
	Coroutines []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"coroutines"`
	Plugins []struct {
		Path        string `json:"path"`
		PID         int    `json:"pid"`
		Instances   int    `json:"instances"`
		Generations []int  `json:"generations"`
	} `json:"plugins"`
	Reloads struct {
		Total     int    `json:"total"`
		Failed    int    `json:"failed"`
		LastError string `json:"last_error"`
	} `json:"reloads"`
}

func (p *serveProc) health() healthDoc {
	p.t.Helper()
	var h healthDoc
	code, body := p.get("/health/")
	if code != 200 && code != 503 {
		p.t.Fatalf("GET /health/: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		p.t.Fatalf("GET /health/: %v in %s", err, body)
	}
	return h
}

// healthPID returns the pid the health app reports, 0 if it does not answer.
func (p *serveProc) healthPID() int {
	var h struct {
		PID int `json:"pid"`
	}
	code, body := p.get("/health/")
	if code == 0 || json.Unmarshal([]byte(body), &h) != nil {
		return 0
	}
	return h.PID
}

// waitReload waits until the reload count reaches n and returns the health
// document then.
func (p *serveProc) waitReload(n int) healthDoc {
	p.t.Helper()
	var h healthDoc
	p.waitFor(fmt.Sprintf("reload %d", n), func() bool {
		code, body := p.get("/health/")
		if code != 200 && code != 503 {
			return false // not there yet (a new address)
		}
		h = healthDoc{}
		return json.Unmarshal([]byte(body), &h) == nil && h.Reloads.Total >= n
	})
	return h
}

// load is a load generator: workers GET path in a loop, half on kept-alive
// connections, half on a new connection per request, until stop.
type load struct {
	sent, non2xx, errs atomic.Int64
	mu                 sync.Mutex
	firstErr           string
	bodies             map[string]int
	stop               chan struct{}
	wg                 sync.WaitGroup
}

func startLoad(base, path string, workers int) *load {
	return startLoadDial(base, path, workers, nil)
}

// startLoadDial is startLoad with connections made by dial (nil: TCP).
func startLoadDial(base, path string, workers int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *load {
	l := &load{stop: make(chan struct{}), bodies: map[string]int{}}
	for i := range workers {
		tr := &http.Transport{DisableKeepAlives: i%2 == 1, DialContext: dial}
		c := &http.Client{Timeout: 30 * time.Second, Transport: tr}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer tr.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.sent.Add(1)
				resp, err := c.Get(base + path)
				if err != nil {
					l.errs.Add(1)
					l.note(err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					l.non2xx.Add(1)
					l.note(fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				l.mu.Lock()
				l.bodies[string(b)]++
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) note(s string) {
	l.mu.Lock()
	if l.firstErr == "" {
		l.firstErr = s
	}
	l.mu.Unlock()
}

func (l *load) seen(body string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bodies[body] > 0
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("load: %d requests, %d non-2xx, %d socket errors", l.sent.Load(), l.non2xx.Load(), l.errs.Load())
	if l.non2xx.Load() != 0 || l.errs.Load() != 0 {
		t.Errorf("requests failed across reloads: %d non-2xx, %d errors; first: %s", l.non2xx.Load(), l.errs.Load(), l.firstErr)
	}
	if l.sent.Load() == 0 {
		t.Error("the load generator sent nothing")
	}
}

// reloadINI is the composition the reload tests serve: the http runner, a
// urlmap with hello from a plugin binary in the test directory, health and
// metrics.
const reloadINI = `[server:main]
use = egg:paster#http
host = 127.0.0.1
port = {{PORT}}
shutdown_timeout = {{SHUTDOWN}}
{{STARTUP}}

[coroutine:tick]
use = egg:hello#ticker
interval = 1

[composite:main]
use = egg:paster#urlmap
/hello = hello
/health = health
/metrics = metrics

[app:hello]
use = plugin:paster-plugin-hello#main
greeting = {{GREETING}}
name = reload

[app:health]
use = egg:paster#health

[app:metrics]
use = egg:paster#metrics
`

type iniVars struct {
	port     int
	shutdown int
	greeting string
	startup  bool
}

func writeINI(t *testing.T, path string, v iniVars) {
	t.Helper()
	s := strings.ReplaceAll(reloadINI, "{{PORT}}", fmt.Sprint(v.port))
	s = strings.ReplaceAll(s, "{{SHUTDOWN}}", fmt.Sprint(v.shutdown))
	s = strings.ReplaceAll(s, "{{GREETING}}", v.greeting)
	startup := ""
	if v.startup {
		startup = "startup = tick"
	}
	s = strings.ReplaceAll(s, "{{STARTUP}}", startup)
	// Write beside and rename, as editors do, so a poll never sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// copyPlugin copies the hello plugin into dir, with extra bytes appended
// (a different file that runs the same).
func copyPlugin(t *testing.T, dir string, extra string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(binDir, "plugins", "paster-plugin-hello"))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "paster-plugin-hello")
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, append(b, extra...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// pluginPID returns the pid of the process the current generation uses for
// the binary whose path ends in suffix.
func pluginPID(h healthDoc, suffix string) int {
	for _, p := range h.Plugins {
		if strings.HasSuffix(p.Path, suffix) && slices.Contains(p.Generations, h.Generation) {
			return p.PID
		}
	}
	return 0
}

func hasCoroutine(h healthDoc, name string) bool {
	for _, c := range h.Coroutines {
		if c.Name == name {
			return true
		}
	}
	return false
}

// exerciseReloads makes each kind of change under continuous load; trigger
// makes the server notice the change (SIGHUP, or nothing with --reload).
func exerciseReloads(t *testing.T, dir string, p *serveProc, v iniVars, trigger func()) {
	ini := filepath.Join(dir, "dev.ini")
	l := startLoad(p.base, "/hello", 4)
	p.waitFor("load to be served", func() bool { return l.seen("Hello, reload!\n") })
	n := p.health().Reloads.Total

	// 1. An app's setting.
	v.greeting = "Howdy"
	writeINI(t, ini, v)
	trigger()
	n++
	p.waitReload(n)
	p.waitFor("the new greeting", func() bool { return l.seen("Howdy, reload!\n") })

	// 2. A plugin binary rebuilt.
	before := pluginPID(p.health(), "/paster-plugin-hello")
	copyPlugin(t, dir, "rebuilt")
	trigger()
	n++
	h := p.waitReload(n)
	if after := pluginPID(h, "/paster-plugin-hello"); after == before || after == 0 {
		t.Errorf("plugin process after the binary changed: pid %d, before %d; want a new process", after, before)
	}
	// The old process may still drain beside the new one: /metrics holds
	// each series once all the same.
	seriesOnce(t, p)

	// 3. A startup coroutine added.
	v.startup = true
	writeINI(t, ini, v)
	trigger()
	n++
	if h := p.waitReload(n); !hasCoroutine(h, "tick") {
		t.Errorf("coroutine tick not running after it was added: %+v", h.Coroutines)
	}

	// 4. The server section (same address): a new server on the kept socket.
	v.shutdown++
	writeINI(t, ini, v)
	trigger()
	n++
	p.waitReload(n)
	p.waitFor("the new server", func() bool { return strings.Contains(p.log.String(), "starting the new server beside the old one") })
	// Requests keep being served after the switch.
	sent := l.sent.Load()
	p.waitFor("requests after the server switch", func() bool { return l.sent.Load() > sent+20 })

	l.finish(t)
	if h := p.health(); h.Reloads.Failed != 0 {
		t.Errorf("failed reloads: %+v", h.Reloads)
	}
	if code, body := p.get("/health/ready"); code != 200 || body != "ready\n" {
		t.Errorf("GET /health/ready: %d %q", code, body)
	}
	code, metrics := p.get("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, metrics)
	}
	for _, want := range []string{
		`paster_http_requests_total{app="/hello",code="200"}`,
		`paster_http_requests_total{app="/health",code="200"}`,
		`paster_http_request_duration_seconds_bucket{app="/hello",le="+Inf"}`,
		`paster_reloads_total{result="ok"} 4`,
		`paster_reload_last_success 1`,
		`paster_coroutine_state{coroutine="tick",state="running"} 1`,
		`paster_plugin_up{dist="hello"`,
		`paster_plugin_restarts_total{dist="hello"`,
		`paster_core_parked{kind="waiters"}`,
		"paster_generation 5",
		`paster_plugin_hop_duration_seconds_count{dist="hello"}`,
		`paster_plugin_hop_received_bytes_total{dist="hello"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Four reloads registered nothing twice and left no series behind.
	seriesOnce(t, p)
}

// seriesOnce scrapes /metrics and fails the test unless it answers 200
// with every series once, the Go runtime's included, as Prometheus needs.
func seriesOnce(t *testing.T, p *serveProc) {
	t.Helper()
	code, metrics := p.get("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, metrics)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(metrics), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		series := line[:strings.LastIndexByte(line, ' ')]
		if seen[series] {
			t.Errorf("/metrics has %s twice", series)
		}
		seen[series] = true
	}
	if !seen["go_goroutines"] || !seen["paster_generation"] {
		t.Errorf("/metrics lacks go_goroutines or paster_generation:\n%s", metrics)
	}
}

func reloadSetup(t *testing.T) (string, iniVars) {
	dir := t.TempDir()
	v := iniVars{port: testsync.FreePort(t), shutdown: 5, greeting: "Hello"}
	writeINI(t, filepath.Join(dir, "dev.ini"), v)
	copyPlugin(t, dir, "")
	return dir, v
}

func TestReloadSIGHUPUnderLoad(t *testing.T) {
	t.Parallel()
	dir, v := reloadSetup(t)
	p := startServe(t, dir, v.port, "dev.ini", "--log-level", "debug")
	exerciseReloads(t, dir, p, v, func() { p.cmd.Process.Signal(syscall.SIGHUP) })
	// The drained generations' instances in the reused hello process
	// were destroyed, not left to pile up.
	p.waitFor("instances of a drained generation destroyed", func() bool {
		return strings.Contains(p.log.String(), "instances destroyed")
	})
}

func TestReloadWatchUnderLoad(t *testing.T) {
	t.Parallel()
	dir, v := reloadSetup(t)
	p := startServe(t, dir, v.port, "dev.ini", "--reload", "--reload-interval", "100ms")
	exerciseReloads(t, dir, p, v, func() {})
}

func TestReloadBrokenINIKeepsServing(t *testing.T) {
	t.Parallel()
	dir, v := reloadSetup(t)
	p := startServe(t, dir, v.port, "dev.ini")
	ini := filepath.Join(dir, "dev.ini")
	good, _ := os.ReadFile(ini)
	broken := strings.Replace(string(good), "use = plugin:paster-plugin-hello#main", "use = egg:paster#nosuchapp", 1)
	os.WriteFile(ini, []byte(broken), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	h := p.waitReload(1)
	if h.Reloads.Failed != 1 || h.Generation != 1 {
		t.Errorf("after a broken reload: %+v, generation %d; want 1 failed, generation 1", h.Reloads, h.Generation)
	}
	if !strings.Contains(h.Reloads.LastError, "dev.ini:") || !strings.Contains(h.Reloads.LastError, "[app:hello]") || !strings.Contains(h.Reloads.LastError, "nosuchapp") {
		t.Errorf("reload error should name the file, line and section: %q", h.Reloads.LastError)
	}
	if code, body := p.get("/hello"); code != 200 || body != "Hello, reload!\n" {
		t.Errorf("old generation after a failed reload: %d %q", code, body)
	}
	// Fixed again: the next reload succeeds.
	os.WriteFile(ini, good, 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if h := p.waitReload(2); h.Reloads.Failed != 1 || h.Generation != 3 {
		t.Errorf("after fixing: %+v, generation %d", h.Reloads, h.Generation)
	}
}

const waitINI = `[server:main]
use = egg:paster#http
host = 127.0.0.1
port = {{PORT}}
shutdown_timeout = 20

[composite:main]
use = egg:paster#urlmap
/wait = wait
/health = health

[app:wait]
use = egg:waitapp#main
signal = abc
timeout = {{TIMEOUT}}

[app:health]
use = egg:paster#health
`

// startWaiter GETs /wait/ and returns once the response's first line
// arrived (the request is parked); the rest of the body comes on the channel.
func startWaiter(t *testing.T, base string) <-chan string {
	t.Helper()
	resp, err := http.Get(base + "/wait/")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		defer resp.Body.Close()
		b, err := io.ReadAll(br)
		if err != nil {
			b = append(b, " read error: "+err.Error()...)
		}
		out <- string(b)
	}()
	return out
}

func TestParkedWaiterAcrossReloadAndShutdown(t *testing.T) {
	t.Parallel()
	buildPlugin(t, "waitapp")
	dir := t.TempDir()
	port := testsync.FreePort(t)
	ini := filepath.Join(dir, "dev.ini")
	write := func(timeout int) {
		s := strings.ReplaceAll(strings.ReplaceAll(waitINI, "{{PORT}}", fmt.Sprint(port)), "{{TIMEOUT}}", fmt.Sprint(timeout))
		if err := os.WriteFile(ini, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(60)
	p := startServe(t, dir, port, "dev.ini")

	// A waiter parked in generation 1 is woken by a signal sent through
	// generation 2: the Core outlives the generations.
	got := startWaiter(t, p.base)
	write(61)
	p.cmd.Process.Signal(syscall.SIGHUP)
	if h := p.waitReload(1); h.Generation != 2 {
		t.Fatalf("reload: %+v", h)
	}
	if code, body := p.get("/wait/signal?message=across&min=1"); code != 200 || !strings.Contains(body, "Signalled 1") {
		t.Fatalf("signal: %d %q", code, body)
	}
	if body := <-got; !strings.Contains(body, "Someone signaled me with this message: across") {
		t.Errorf("waiter across a reload got %q", body)
	}

	// A waiter parked at shutdown gets a definite answer, not a cut
	// connection, and the process exits 0.
	got = startWaiter(t, p.base)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if body := <-got; !strings.Contains(body, "Waiting ended") || !strings.Contains(body, "closed") {
		t.Errorf("waiter at shutdown got %q", body)
	}
	if err := <-p.done; err != nil {
		t.Errorf("paster serve exit: %v", err)
	}
	p.done <- nil
}

// TestReloadFirstLoadFails: with --reload, a configuration that does not
// load is reported and tried again once it is fixed.
func TestReloadFirstLoadFails(t *testing.T) {
	t.Parallel()
	dir, v := reloadSetup(t)
	ini := filepath.Join(dir, "dev.ini")
	good, _ := os.ReadFile(ini)
	os.WriteFile(ini, []byte(strings.Replace(string(good), "use = egg:paster#health", "use = egg:paster#helth", 1)), 0o644)
	p := spawnServe(t, dir, v.port, "dev.ini", "--reload", "--reload-interval", "100ms")
	p.waitFor("the load error", func() bool { return strings.Contains(p.log.String(), "waiting for a change") })
	if log := p.log.String(); !strings.Contains(log, "[app:health]") || !strings.Contains(log, "dev.ini:") {
		t.Errorf("load error should name the file, line and section:\n%s", log)
	}
	writeINI(t, ini, v)
	p.waitFor("the server after the fix", func() bool {
		code, _ := p.get("/health/live")
		return code == 200
	})
}

// pluginServerINI serves a static file through chat's hijacked_runner.
func pluginServerINI(port, tick int) []byte {
	return fmt.Appendf(nil, swapINI, "egg:chat#hijacked_runner", port, fmt.Sprintf("tick_interval = %d\n", tick))
}

// startPluginServer builds the chat plugin and serves pluginServerINI
// (tick 30) and a file "hello" from a fresh directory; it returns the
// server, the path of its dev.ini and its port.
func startPluginServer(t *testing.T) (p *serveProc, ini string, port int) {
	t.Helper()
	buildPlugin(t, "chat")
	dir := t.TempDir()
	port = testsync.FreePort(t)
	ini = filepath.Join(dir, "dev.ini")
	os.WriteFile(filepath.Join(dir, "hello"), []byte("hi\n"), 0o644)
	os.WriteFile(ini, pluginServerINI(port, 30), 0o644)
	return startServe(t, dir, port, "dev.ini"), ini, port
}

// TestReloadPluginServerKeepsSocket: the server runs inside a plugin
// process (chat's hijacked_runner, built on runner.Runner); a change of its
// section starts the new server in the same process on the same socket, and
// no request fails, new connections included.
func TestReloadPluginServerKeepsSocket(t *testing.T) {
	t.Parallel()
	p, ini, port := startPluginServer(t)
	l := startLoad(p.base, "/hello", 4)
	p.waitFor("load to be served", func() bool { return l.seen("hi\n") })
	for i := 1; i <= 3; i++ {
		os.WriteFile(ini, pluginServerINI(port, 30+i), 0o644)
		p.cmd.Process.Signal(syscall.SIGHUP)
		p.waitReload(i)
		sent := l.sent.Load()
		p.waitFor("requests after the switch", func() bool { return l.sent.Load() > sent+20 })
	}
	l.finish(t)
	if n := strings.Count(p.log.String(), "starting the new server beside the old one"); n != 3 {
		t.Errorf("%d server switches beside the old one, want 3", n)
	}

	// An app-only change keeps the server; the generation that started it
	// drains without taking the server instance along: when the plugin
	// process crashes, the server is run again in the restarted process.
	body, _ := os.ReadFile(ini)
	os.WriteFile(ini, []byte(strings.Replace(string(body), "document_root = .", "document_root = .\ncache_max_age = 5", 1)), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	h := p.waitReload(4)
	p.waitFor("the previous generation drained", func() bool {
		return strings.Contains(p.log.String(), fmt.Sprintf("generation drained: generation=%d", h.Generation-1))
	})
	chat := pluginPID(h, "/paster-plugin-chat")
	if chat == 0 {
		t.Fatalf("no chat process in %+v", h.Plugins)
	}
	syscall.Kill(chat, syscall.SIGKILL)
	p.waitFor("the server back in a restarted chat process", func() bool {
		code, body := p.get("/health/")
		var h healthDoc
		return code == 200 && json.Unmarshal([]byte(body), &h) == nil && pluginPID(h, "/paster-plugin-chat") != chat && pluginPID(h, "/paster-plugin-chat") != 0
	})
	if code, body := p.get("/hello"); code != 200 || body != "hi\n" {
		t.Errorf("after the plugin's restart: %d %q", code, body)
	}
}

// TestReloadPluginServerInstances: a server runner in a reused plugin
// process (chat's hijacked_runner) leaves no instance behind in the plugin
// when a change of its section stops it, while a server kept across
// generations keeps its instance.
func TestReloadPluginServerInstances(t *testing.T) {
	t.Parallel()
	p, ini, port := startPluginServer(t)
	instances := func(h healthDoc) int {
		for _, pl := range h.Plugins {
			if strings.HasSuffix(pl.Path, "/paster-plugin-chat") && slices.Contains(pl.Generations, h.Generation) {
				return pl.Instances
			}
		}
		t.Fatalf("no chat process in %+v", h.Plugins)
		return 0
	}
	// reload signals a reload and waits until the previous generation
	// has drained (its instances are destroyed before that is logged).
	reload := func(n int) healthDoc {
		p.cmd.Process.Signal(syscall.SIGHUP)
		h := p.waitReload(n)
		if h.Generation != n+1 {
			t.Fatalf("reload %d: generation %d, %+v", n, h.Generation, h.Reloads)
		}
		p.waitFor(fmt.Sprintf("generation %d drained", n), func() bool {
			return strings.Contains(p.log.String(), fmt.Sprintf("generation drained: generation=%d ", n))
		})
		return p.health()
	}
	want := instances(p.health())
	if want < 1 {
		t.Fatalf("%d instances in the chat process serving the server", want)
	}
	for i := 1; i <= 4; i++ {
		os.WriteFile(ini, pluginServerINI(port, 30+i), 0o644)
		if got := instances(reload(i)); got != want {
			t.Errorf("after server-section reload %d: %d instances in the chat process, want %d", i, got, want)
		}
	}
	// An app-only change keeps the server and its instance.
	body, _ := os.ReadFile(ini)
	os.WriteFile(ini, []byte(strings.Replace(string(body), "document_root = .", "document_root = .\ncache_max_age = 5", 1)), 0o644)
	if got := instances(reload(5)); got != want {
		t.Errorf("after an app-only reload: %d instances in the chat process, want %d", got, want)
	}
	// The kept server, started by an older generation, is stopped by a
	// server-section change: its instance goes too.
	os.WriteFile(ini, pluginServerINI(port, 40), 0o644)
	if got := instances(reload(6)); got != want {
		t.Errorf("after stopping a server kept across generations: %d instances in the chat process, want %d", got, want)
	}
	if code, body := p.get("/hello"); code != 200 || body != "hi\n" {
		t.Errorf("after the reloads: %d %q", code, body)
	}
	if n := strings.Count(p.log.String(), "starting the new server beside the old one"); n != 5 {
		t.Errorf("%d server switches beside the old one, want 5", n)
	}
}

// TestReloadNotReadyKeepsServing: a new generation whose required startup
// coroutine does not report ready within ready_timeout is never swapped in.
func TestReloadNotReadyKeepsServing(t *testing.T) {
	t.Parallel()
	dir, v := reloadSetup(t)
	p := startServe(t, dir, v.port, "dev.ini")
	ini := filepath.Join(dir, "dev.ini")
	v.startup = true
	writeINI(t, ini, v)
	b, _ := os.ReadFile(ini)
	s := strings.Replace(string(b), "startup = tick", "startup = tick\nready_timeout = 0.5", 1)
	s = strings.Replace(s, "interval = 1\n", "interval = 1\nrequired = true\n", 1)
	os.WriteFile(ini, []byte(s), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	h := p.waitReload(1)
	if h.Reloads.Failed != 1 || h.Generation != 1 || !strings.Contains(h.Reloads.LastError, "not ready") || !strings.Contains(h.Reloads.LastError, "tick") {
		t.Errorf("after a reload that never got ready: generation %d, %+v", h.Generation, h.Reloads)
	}
	if hasCoroutine(h, "tick") {
		t.Error("the failed generation's coroutine is shown as current")
	}
	if code, body := p.get("/hello"); code != 200 || body != "Hello, reload!\n" {
		t.Errorf("old generation: %d %q", code, body)
	}
}

// TestReloadNewAddress: a server section moved to another port serves
// there, and the old port's socket is closed once the old server drained.
func TestReloadNewAddress(t *testing.T) {
	t.Parallel()
	dir, v := reloadSetup(t)
	p := startServe(t, dir, v.port, "dev.ini")
	old := p.base
	v.port = testsync.FreePort(t)
	writeINI(t, filepath.Join(dir, "dev.ini"), v)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.base = fmt.Sprintf("http://127.0.0.1:%d", v.port)
	p.waitReload(1)
	if code, body := p.get("/hello"); code != 200 {
		t.Errorf("new address: %d %q", code, body)
	}
	p.waitFor("the old socket to close", func() bool {
		_, err := net.Dial("tcp", strings.TrimPrefix(old, "http://"))
		return err != nil
	})
}
