package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/tlstest"
)

// pluginDir holds the example plugin binaries these tests serve from.
var pluginDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "paster-engine-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = dir
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/paster-dev/paster/examples/hello/cmd/paster-plugin-hello",
		"github.com/paster-dev/paster/examples/chat/cmd/paster-plugin-chat")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the example plugins:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gates are what /slow requests of the enginetest dist wait on, by name.
var gates sync.Map // name → *gate

type gate struct {
	entered chan struct{} // closed when a request waits
	open    chan struct{} // closed to let it answer
}

func gateNamed(name string) *gate {
	g, _ := gates.LoadOrStore(name, &gate{entered: make(chan struct{}), open: make(chan struct{})})
	return g.(*gate)
}

// testDist is compiled into the test binary: app main answers its key
// text; on /slow it first waits for the gate its key gate names.
var testDist = &entrypoints.Dist{
	Name:    "enginetest",
	Version: "0.0.1",
	// server plain reads none of its keys: whatever it is given, only the
	// engine checks the settings every server section shares.
	Servers: map[string]entrypoints.ServerFactory{
		"plain": func(map[string]string, entrypoints.Local) (entrypoints.Server, error) {
			return func(ctx context.Context, _ http.Handler) error { <-ctx.Done(); return nil }, nil
		},
	},
	// filter broken fails: a load that reaches it fails after creating
	// what came before (a filter-app's next is created first).
	Filters: map[string]entrypoints.FilterFactory{
		"broken": func(map[string]string, entrypoints.Local) (entrypoints.Filter, error) {
			return nil, errors.New("broken on purpose")
		},
	},
	Apps: map[string]entrypoints.AppFactory{
		"main": func(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
			text, gname := local.Get("text"), local.Get("gate")
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					g := gateNamed(gname)
					close(g.entered)
					<-g.open
				}
				_, _ = io.WriteString(w, text)
			}), nil
		},
	},
}

func init() { entrypoints.Register(testDist) }

// running is an Engine serving in this process.
type running struct {
	t      *testing.T
	e      *Engine
	ini    string
	base   string
	reload chan struct{}
	// coreWarnings counts the Engine's log lines saying that the core
	// changed.
	coreWarnings atomic.Int64
}

// coreChanged is the start of the Engine's log line saying that a reload
// changed the core's configuration.
const coreChanged = "the core's configuration changed"

// lineCounter counts the log lines that contain coreChanged.
type lineCounter struct{ n *atomic.Int64 }

func (c lineCounter) Write(p []byte) (int, error) {
	c.n.Add(int64(bytes.Count(p, []byte(coreChanged))))
	return len(p), nil
}

// serveINI writes text as dev.ini in a temporary directory, runs an Engine
// on it (its Config changed by opts) and returns once it serves; the Engine
// is shut down, and Run must return nil, when the test ends.
func serveINI(t *testing.T, port int, text string, opts ...func(*Config)) *running {
	t.Helper()
	dir := t.TempDir()
	r := &running{t: t, ini: filepath.Join(dir, "dev.ini"), reload: make(chan struct{}, 1)}
	r.write(text)
	r.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	serving := make(chan struct{})
	cfg := Config{
		ConfigURI:  "config:dev.ini",
		ServerURI:  "config:dev.ini#main",
		AppURI:     "config:dev.ini#main",
		Base:       dir,
		PluginDirs: []string{pluginDir},
		Logger:     hclog.New(&hclog.LoggerOptions{Name: "engine", Output: io.MultiWriter(testWriter{t}, lineCounter{&r.coreWarnings}), Level: hclog.Info}),
		OnServing:  func() { close(serving) },
	}
	for _, o := range opts {
		o(&cfg)
	}
	var err error
	r.e, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.e.Run(ctx, r.reload) }()
	select {
	case <-serving:
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before serving: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("not serving after 60s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (r *running) write(text string) {
	r.t.Helper()
	if err := os.WriteFile(r.ini, []byte(text), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// reloadTo writes text and reloads, and returns once the reload ended and
// every older generation has drained; the reload must have succeeded.
func (r *running) reloadTo(text string) {
	r.t.Helper()
	before := r.e.snapshot().Reloads.Total
	r.write(text)
	r.reload <- struct{}{}
	testsync.WaitFor(r.t, "the reload", func() bool {
		s := r.e.snapshot()
		return s.Reloads.Total > before && len(s.Draining) == 0
	})
	if s := r.e.snapshot(); !s.Reloads.LastOK {
		r.t.Fatalf("reload failed: %s", s.Reloads.LastError)
	}
}

// reloadFails writes text and reloads, and returns once the reload ended;
// it must have failed with an error containing want.
func (r *running) reloadFails(text, want string) {
	r.t.Helper()
	before := r.e.snapshot().Reloads.Total
	r.write(text)
	r.reload <- struct{}{}
	testsync.WaitFor(r.t, "the reload", func() bool { return r.e.snapshot().Reloads.Total > before })
	if s := r.e.snapshot(); s.Reloads.LastOK || !strings.Contains(s.Reloads.LastError, want) {
		r.t.Fatalf("reload: ok %v, error %q; want an error containing %q", s.Reloads.LastOK, s.Reloads.LastError, want)
	}
}

// get fetches path on a fresh connection: status and body, or status 0 and
// the error.
func (r *running) get(path string) (int, string) {
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(r.base + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const serverSection = `[server:main]
use = %s
host = 127.0.0.1
port = %d
shutdown_timeout = 5

`

// TestEngineReload: a reload swaps in the new configuration of an app
// compiled in and of an app in a plugin binary, the server untouched.
func TestEngineReload(t *testing.T) {
	t.Parallel()
	hello := "plugin:" + filepath.Join(pluginDir, "paster-plugin-hello") + "#main"
	tests := []struct {
		name string
		app  func(v string) string
		body func(v string) string
	}{
		{
			name: "compiled in",
			app:  func(v string) string { return "[app:main]\nuse = egg:enginetest#main\ntext = " + v + "\n" },
			body: func(v string) string { return v },
		},
		{
			name: "plugin binary",
			app:  func(v string) string { return "[app:main]\nuse = " + hello + "\ngreeting = " + v + "\nname = engine\n" },
			body: func(v string) string { return v + ", engine!\n" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			port := testsync.FreePort(t)
			srv := fmt.Sprintf(serverSection, "egg:paster#http", port)
			r := serveINI(t, port, srv+tt.app("one"))
			if code, body := r.get("/"); code != 200 || body != tt.body("one") {
				t.Fatalf("generation 1: %d %q", code, body)
			}
			for i, v := range []string{"two", "three"} {
				r.reloadTo(srv + tt.app(v))
				if code, body := r.get("/"); code != 200 || body != tt.body(v) {
					t.Fatalf("after reload %d: %d %q, want %q", i+1, code, body, tt.body(v))
				}
			}
			if g := r.e.snapshot().Generation; g != 3 {
				t.Errorf("generation %d, want 3", g)
			}
		})
	}
}

// TestEngineDrain: a request in flight when its generation is swapped out
// is answered by that generation, after the new one serves.
func TestEngineDrain(t *testing.T) {
	t.Parallel()
	port := testsync.FreePort(t)
	srv := fmt.Sprintf(serverSection, "egg:paster#http", port)
	name := fmt.Sprintf("drain-%d", time.Now().UnixNano()) // a gate of this run's own (-count)
	app := "[app:main]\nuse = egg:enginetest#main\ngate = " + name + "\ntext = "
	r := serveINI(t, port, srv+app+"old")
	g := gateNamed(name)
	slow := make(chan string, 1)
	go func() {
		code, body := r.get("/slow")
		slow <- fmt.Sprint(code, " ", body)
	}()
	select {
	case <-g.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow request did not arrive")
	}
	before := r.e.snapshot().Reloads.Total
	r.write(srv + app + "new")
	r.reload <- struct{}{}
	testsync.WaitFor(r.t, "the new generation", func() bool { return r.e.snapshot().Reloads.Total > before })
	if code, body := r.get("/"); code != 200 || body != "new" {
		t.Fatalf("after the reload: %d %q", code, body)
	}
	if d := r.e.snapshot().Draining; len(d) != 1 || d[0] != 1 {
		t.Errorf("draining %v, want [1] while its request runs", d)
	}
	close(g.open)
	if got := <-slow; got != "200 old" {
		t.Errorf("the request in flight got %q, want 200 old", got)
	}
	testsync.WaitFor(r.t, "generation 1 to drain", func() bool { return len(r.e.snapshot().Draining) == 0 })
}

// TestEngineRunnerSwap: a changed server section starts the new server
// beside the old one on the same socket — built-in runner to a runner in a
// plugin binary and back — and no request fails under load.
func TestEngineRunnerSwap(t *testing.T) {
	t.Parallel()
	port := testsync.FreePort(t)
	chat := "plugin:" + filepath.Join(pluginDir, "paster-plugin-chat") + "#hijacked_runner"
	app := "[app:main]\nuse = egg:enginetest#main\ntext = ok\n"
	builtin := fmt.Sprintf(serverSection, "egg:paster#http", port) + app
	plugin := fmt.Sprintf(serverSection, chat, port) + app
	r := serveINI(t, port, builtin)

	var stop atomic.Bool
	var total, failed atomic.Int64
	var first atomic.Value
	var stepNow atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				total.Add(1)
				if code, body := r.get("/"); code != 200 || body != "ok" {
					failed.Add(1)
					first.CompareAndSwap(nil, fmt.Sprint("step ", stepNow.Load(), " ", code, " ", body))
				}
			}
		}()
	}
	chatBinary, err := filepath.EvalSymlinks(filepath.Join(pluginDir, "paster-plugin-chat"))
	if err != nil {
		t.Fatal(err)
	}
	for i, step := range []struct{ text, binary string }{{plugin, chatBinary}, {builtin, ""}, {plugin, chatBinary}} {
		stepNow.Store(int64(i + 1))
		r.reloadTo(step.text)
		stepNow.Store(int64(-i - 1))
		// The loader's tree says where the server runs (Node.Binary).
		r.e.mu.Lock()
		got := r.e.cur.session.Root[0].Binary
		r.e.mu.Unlock()
		if got != step.binary {
			t.Errorf("server node's binary %q, want %q", got, step.binary)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed across runner swaps; first: %v", failed.Load(), total.Load(), first.Load())
	}
	if s := r.e.snapshot(); s.Generation != 4 {
		t.Errorf("generation %d, want 4", s.Generation)
	}
}

// openFDsTo counts this process's descriptors open on path.
func openFDsTo(t *testing.T, path string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// TestEngineClosesDrainedGeneration: what a generation's factories made
// that implements io.Closer is closed once the generation has drained —
// the translogger's log file is open once however often the configuration
// is reloaded, and closed after shutdown.
func TestEngineClosesDrainedGeneration(t *testing.T) {
	t.Parallel()
	port := testsync.FreePort(t)
	ini := fmt.Sprintf(serverSection, "egg:paster#http", port) + `[app:main]
use = egg:enginetest#main
text = %d
filter-with = log

[filter:log]
use = egg:paster#translogger
output = access.log
`
	r := serveINI(t, port, fmt.Sprintf(ini, 0))
	logFile := filepath.Join(filepath.Dir(r.ini), "access.log")
	for i := 1; i <= 5; i++ {
		r.reloadTo(fmt.Sprintf(ini, i))
		if code, body := r.get("/"); code != 200 || body != fmt.Sprint(i) {
			t.Fatalf("after reload %d: %d %q", i, code, body)
		}
	}
	if n := openFDsTo(t, logFile); n != 1 {
		t.Errorf("%d descriptors open on %s after 5 reloads, want 1 (the serving generation's)", n, logFile)
	}
	b, err := os.ReadFile(logFile)
	if err != nil || strings.Count(string(b), `"GET / HTTP/1.1" 200`) != 5 {
		t.Errorf("access log (%v), want the 5 requests:\n%s", err, b)
	}
}

// usage is what a serving engine holds that a reload must not add to.
type usage struct {
	fds, goroutines int
	// instances is what the host records, inProcess what the plugin
	// processes themselves hold (asked with the Status call).
	instances, inProcess int
	pids                 string
}

func (r *running) usage() usage {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		r.t.Skipf("no /proc/self/fd: %v", err)
	}
	u := usage{fds: len(fds), goroutines: runtime.NumGoroutine()}
	var pids []string
	for _, p := range r.e.snapshot().Plugins {
		u.instances += p.Instances
		pids = append(pids, fmt.Sprint(p.PID))
	}
	u.pids = strings.Join(pids, ",")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	counts, err := r.e.pool.ProcessInstances(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, n := range counts {
		u.inProcess += n
	}
	return u
}

// TestEngine100Reloads: a hundred reloads of a configuration with an app in
// a plugin binary, a compiled-in app and a translogger writing a file leave
// the host's descriptors and goroutines, the plugin instances (as the host
// records them and as the plugin processes count them) and the plugin
// processes where they were after the first reloads. Among them, every
// tenth is preceded by a reload that fails after it started another plugin
// (chat) and created an instance in it, and twice the server moves into
// that plugin (a server runner in it) for a few reloads and back: what a
// failed build made, and what a stopped server made, is released too. Not
// parallel: it counts the whole test process's descriptors and goroutines.
func TestEngine100Reloads(t *testing.T) {
	port := testsync.FreePort(t)
	hello := "plugin:" + filepath.Join(pluginDir, "paster-plugin-hello") + "#main"
	chat := "plugin:" + filepath.Join(pluginDir, "paster-plugin-chat")
	app := `[composite:main]
use = egg:paster#urlmap
/ = local
/hello = hello
filter-with = log

[app:local]
use = egg:enginetest#main
text = %d

[app:hello]
use = ` + hello + `
greeting = Hi
name = %d

[filter:log]
use = egg:paster#translogger
output = access.log
`
	builtin := fmt.Sprintf(serverSection, "egg:paster#http", port) + app
	inChat := fmt.Sprintf(serverSection, chat+"#hijacked_runner", port) + app
	// broken loads chat's app, then fails on the filter wrapping it.
	broken := fmt.Sprintf(serverSection, "egg:paster#http", port) + `[filter-app:main]
use = egg:enginetest#broken
next = chat

[app:chat]
use = ` + chat + `#main
`
	r := serveINI(t, port, fmt.Sprintf(builtin, 0, 0))
	reload := func(i int) {
		ini := builtin
		if i%50 >= 20 && i%50 < 23 {
			ini = inChat
		}
		if i%10 == 0 {
			r.reloadFails(broken, "broken on purpose")
		}
		r.reloadTo(fmt.Sprintf(ini, i, i))
		if code, body := r.get("/hello"); code != 200 || body != fmt.Sprintf("Hi, %d!\n", i) {
			t.Fatalf("reload %d: GET /hello = %d %q", i, code, body)
		}
	}
	for i := 1; i <= 3; i++ {
		reload(i)
	}
	// Descriptors and goroutines of connections just closed may take a
	// moment to go: compare once they have settled, with a deadline.
	flat := func(u, base usage) bool {
		return u.fds <= base.fds && u.goroutines <= base.goroutines && u.instances == base.instances &&
			u.inProcess == base.inProcess && u.pids == base.pids
	}
	settled := func(base usage) usage {
		var u usage
		deadline := time.Now().Add(20 * time.Second)
		for {
			u = r.usage()
			if flat(u, base) || time.Now().After(deadline) {
				return u
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	first := r.usage()
	base := settled(usage{fds: 1 << 30, goroutines: 1 << 30, instances: first.instances, inProcess: first.inProcess, pids: first.pids})
	// Without the garbage collector, an *os.File nobody closed stays open
	// (no finalizer runs): what is released is what its owner released.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for i := 4; i < 104; i++ {
		reload(i)
	}
	if u := settled(base); !flat(u, base) {
		t.Errorf("after 100 reloads: %+v; after 3: %+v", u, base)
	}
	if base.instances == 0 || base.inProcess == 0 || base.pids == "" {
		t.Errorf("no plugin instance or process seen: %+v", base)
	}
}

// TestEngineCoreChange: a reload that keeps the core's configuration keeps
// the Core — a wait parked on it before the reload is woken by a Signal on
// the Core serving after it, which counts it — and says nothing; one that
// changes it (a key of the in-memory Core on the server section, the core
// key, a key of the core section) serves the new generation with a new Core
// and closes the old one once the old generation has drained; one that
// changes it and then fails leaves the current Core serving.
func TestEngineCoreChange(t *testing.T) {
	t.Parallel()
	port := testsync.FreePort(t)
	ini := func(core string) string {
		return fmt.Sprintf(serverSection, "egg:paster#http", port) + core + "\n[app:main]\nuse = egg:paster#static\ndocument_root = %(here)s\n"
	}
	r := serveINI(t, port, ini("pubsub_retain_count = 10\n"))
	first := r.e.core
	woken := make(chan string, 1)
	go func() {
		v, err := first.WaitForSignal(context.Background(), "kept", runner.NoTimeout)
		woken <- fmt.Sprintf("%s %v", v, err)
	}()
	testsync.WaitFor(r.t, "the wait to park", func() bool { return first.Stats().Waiters == 1 })
	r.reloadTo(ini("pubsub_retain_count = 10\n"))
	if n := r.coreWarnings.Load(); n != 0 {
		t.Fatalf("a reload with the same core logged %d core change(s)", n)
	}
	if r.e.core != first {
		t.Fatal("a reload with the same core replaced the Core")
	}
	if n, err := r.e.core.Signal(context.Background(), "kept", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal after the reload = %d, %v; want 1 (the wait parked before it)", n, err)
	}
	if got := <-woken; got != "v <nil>" {
		t.Fatalf("the parked wait got %q", got)
	}

	prev := first
	for i, core := range []string{"pubsub_retain_count = 20\n", "core = c\n\n[core:c]\nuse = egg:paster#memory\n", "core = c\n\n[core:c]\nuse = egg:paster#memory\npubsub_retain_count = 5\n"} {
		r.reloadTo(ini(core))
		if n := r.coreWarnings.Load(); n != int64(i+1) {
			t.Fatalf("after changing the core %d time(s), %d core change(s) logged", i+1, n)
		}
		cur := r.e.core
		if cur == prev {
			t.Fatalf("%q: the reload kept the old Core", core)
		}
		// reloadTo returned once the old generation drained: its Core
		// is closed.
		if _, err := prev.Signal(context.Background(), "x", nil); !errors.Is(err, runner.ErrClosed) {
			t.Fatalf("%q: the old Core after the drain: Signal = %v, want ErrClosed", core, err)
		}
		if _, err := cur.Signal(context.Background(), "x", nil); err != nil {
			t.Fatalf("%q: the new Core: Signal = %v", core, err)
		}
		prev = cur
	}
	// A reload that changes the core and then fails (an app that does not
	// exist) leaves the current Core serving.
	r.reloadFails(fmt.Sprintf(serverSection, "egg:paster#http", port)+"pubsub_retain_count = 99\n\n[app:main]\nuse = egg:paster#nosuchapp\n", "nosuchapp")
	if r.e.core != prev {
		t.Fatal("a failed reload replaced the Core")
	}
	if _, err := prev.Signal(context.Background(), "x", nil); err != nil {
		t.Fatalf("the Core after a failed reload: Signal = %v", err)
	}
}

// TestCheckSharedTimeouts: Check reports a bad timeout of a server section
// whatever server it names — one made by a factory, which reads none of
// these keys, too — as serving would, naming file, line, section and key.
func TestCheckSharedTimeouts(t *testing.T) {
	t.Parallel()
	tests := []struct{ line, want string }{
		{"shutdown_timeout = soon", `dev.ini:3 [server:main] shutdown_timeout: bad duration: "soon"`},
		{"shutdown_timeout = -1", "dev.ini:3 [server:main] shutdown_timeout: negative duration -1s"},
		{"ready_timeout = -2", "dev.ini:3 [server:main] ready_timeout: negative duration -2s"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			t.Parallel()
			err := checkINI(t, "[server:main]\nuse = egg:enginetest#plain\n"+tt.line+"\n\n[app:main]\nuse = egg:enginetest#main\n")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestEngineTLSRotation: a reload re-reads the server's certificate files,
// also when the INI file is unchanged, and the new certificate is served
// without a failed request under load (HTTP/2 on kept connections and
// HTTP/1.1 on fresh ones), through the built-in runner and a runner in a
// plugin process; a bad certificate on reload keeps the old one served and
// fails the reload with an error naming file, line, section and key.
func TestEngineTLSRotation(t *testing.T) {
	t.Parallel()
	chat := "plugin:" + filepath.Join(pluginDir, "paster-plugin-chat") + "#hijacked_runner"
	for _, use := range []string{"egg:paster#http", chat} {
		t.Run(use, func(t *testing.T) {
			t.Parallel()
			ca := tlstest.NewCA(t, "rotation CA")
			dir := t.TempDir()
			certA, keyA := ca.Issue(t, "A")
			certFile := tlstest.WriteFile(t, dir, "cert.pem", certA)
			keyFile := tlstest.WriteFile(t, dir, "key.pem", keyA)
			port := testsync.FreePort(t)
			ini := fmt.Sprintf(serverSection, use, port) + "cert_file = " + certFile + "\nkey_file = " + keyFile +
				"\n\n[app:main]\nuse = egg:enginetest#main\ntext = ok\n"
			r := serveINI(t, port, ini)
			url := fmt.Sprintf("https://127.0.0.1:%d/", port)

			served := func() string { return servedCertificate(port, ca) }
			if got := served(); got != "A" {
				t.Fatalf("served certificate %q, want A", got)
			}

			var stop atomic.Bool
			var total, failed atomic.Int64
			var first atomic.Value
			var wg sync.WaitGroup
			h2 := tlstest.Client(ca.Pool())
			fresh := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
				TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
			for i := range 4 {
				c := h2
				if i%2 == 1 {
					c = fresh
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						total.Add(1)
						resp, err := c.Get(url)
						if err != nil {
							failed.Add(1)
							first.CompareAndSwap(nil, err.Error())
							continue
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 || string(b) != "ok" {
							failed.Add(1)
							first.CompareAndSwap(nil, fmt.Sprint(resp.StatusCode, " ", string(b)))
						}
					}
				}()
			}
			reload := func() {
				before := r.e.snapshot().Reloads.Total
				r.reload <- struct{}{}
				testsync.WaitFor(r.t, "the reload", func() bool {
					s := r.e.snapshot()
					return s.Reloads.Total > before && len(s.Draining) == 0
				})
			}
			testsync.WaitFor(r.t, "requests under load", func() bool { return total.Load() > 20 })

			certB, keyB := ca.Issue(t, "B")
			tlstest.WriteFile(t, dir, "key.pem", keyB)
			tlstest.WriteFile(t, dir, "cert.pem", certB)
			reload()
			if s := r.e.snapshot(); !s.Reloads.LastOK {
				t.Fatalf("reload failed: %s", s.Reloads.LastError)
			}
			if got := served(); got != "B" {
				t.Errorf("after the rotation, served certificate %q, want B", got)
			}
			mark := total.Load()
			testsync.WaitFor(r.t, "requests after the rotation", func() bool { return total.Load() > mark+20 })

			tlstest.WriteFile(t, dir, "cert.pem", []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"))
			reload()
			s := r.e.snapshot()
			if s.Reloads.LastOK {
				t.Error("a reload with a bad certificate succeeded")
			} else if !strings.Contains(s.Reloads.LastError, "dev.ini:7 [server:main] cert_file:") {
				t.Errorf("reload error %q does not name dev.ini:7 [server:main] cert_file", s.Reloads.LastError)
			}
			if got := served(); got != "B" {
				t.Errorf("after a bad certificate, served %q, want B still", got)
			}
			mark = total.Load()
			testsync.WaitFor(r.t, "requests after the failed reload", func() bool { return total.Load() > mark+20 })
			stop.Store(true)
			wg.Wait()
			if failed.Load() > 0 {
				t.Errorf("%d of %d requests failed across certificate reloads; first: %v", failed.Load(), total.Load(), first.Load())
			}
		})
	}
}

// TestEngineTLSWatch: with a reload watcher (paster serve --reload), a
// certificate rewritten in place is served without a reload being asked
// for: the files the server's settings read are watched like the INI file.
func TestEngineTLSWatch(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "watch CA")
	dir := t.TempDir()
	certA, keyA := ca.Issue(t, "A")
	certFile := tlstest.WriteFile(t, dir, "cert.pem", certA)
	keyFile := tlstest.WriteFile(t, dir, "key.pem", keyA)
	port := testsync.FreePort(t)
	ini := fmt.Sprintf(serverSection, "egg:paster#http", port) + "cert_file = " + certFile + "\nkey_file = " + keyFile +
		"\n\n[app:main]\nuse = egg:enginetest#main\ntext = ok\n"
	r := serveINI(t, port, ini, func(c *Config) { c.ReloadInterval = 20 * time.Millisecond })
	served := func() string { return servedCertificate(port, ca) }
	if got := served(); got != "A" {
		t.Fatalf("served certificate %q, want A", got)
	}
	certB, keyB := ca.Issue(t, "B")
	tlstest.WriteFile(t, dir, "key.pem", keyB)
	tlstest.WriteFile(t, dir, "cert.pem", certB)
	testsync.WaitFor(r.t, "certificate B served", func() bool { return served() == "B" })
}

// TestCheckSuggestsPluginDist: an egg: name no dist has is answered with
// the near miss among the plugin binaries in the plugin path too, as for
// compiled-in dists.
func TestCheckSuggestsPluginDist(t *testing.T) {
	t.Parallel()
	err := checkINI(t, "[server:main]\nuse = egg:enginetest#plain\n\n[app:main]\nuse = egg:helo#main\n")
	if err == nil || !strings.Contains(err.Error(), `did you mean "hello"?`) {
		t.Fatalf("Check = %v, want a suggestion of the plugin dist hello", err)
	}
}

// checkINI writes ini as dev.ini in a temporary directory and returns the
// error of Check on it (server and app main, plugins from pluginDir).
func checkINI(t *testing.T, ini string) error {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dev.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Check(context.Background(), Config{ServerURI: "config:dev.ini#main", AppURI: "config:dev.ini#main", Base: dir,
		PluginDirs: []string{pluginDir}, Logger: hclog.NewNullLogger()})
	return err
}

// servedCertificate returns the common name of the certificate a new TLS
// connection to port gets, trusting ca; or the dial error's text.
func servedCertificate(port int, ca *tlstest.CA) string {
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}
