package plugins

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
)

func TestEggApp(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "hello" || d.Version != "0.1.0" {
		t.Fatalf("dist = %s %s", d.Name, d.Version)
	}
	a, err := d.Apps["main"](nil, entrypoints.NewLocal("greeting", "Hi", "name", "plugin"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Apps["main"](nil, entrypoints.NewLocal("name", "again"))
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, serve(t, a).URL, "Hi, plugin!\n")
	mustGet(t, serve(t, b).URL, "Hello, again!\n")

	// One process for every section using the binary.
	d2, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	if d2.Binary != d.Binary || len(h.Plugins()) != 1 {
		t.Fatalf("second Egg started another process: %+v", h.Plugins())
	}
	if _, err := d.Find(entrypoints.KindApp, "mian"); !errors.Is(err, entrypoints.ErrNoEntryPoint) ||
		!strings.Contains(err.Error(), `did you mean "main"`) {
		t.Fatalf("missing entry point error = %v", err)
	}
}

func TestSearchPathOrder(t *testing.T) {
	t.Setenv(EnvPluginPath, "/env/a"+string(os.PathListSeparator)+"/env/b")
	h := NewHost(HostOptions{PluginDirs: []string{"/flag"}})
	got := h.SearchPath(entrypoints.Origin{
		Location: entrypoints.Location{File: "/etc/app/development.ini"},
		Plugins:  map[string]string{"path": "plugins /abs"},
	})
	want := []string{"/flag", "/env/a", "/env/b", "/etc/app/plugins", "/abs"}
	if len(got) < len(want) || strings.Join(got[:len(want)], " ") != strings.Join(want, " ") {
		t.Fatalf("SearchPath = %v, want prefix %v", got, want)
	}
	// [plugins] path relative to the INI file finds the binary.
	ini := filepath.Join(filepath.Dir(binDir), "x.ini")
	h2 := newHost(t, HostOptions{PluginDirs: []string{}})
	if _, err := h2.Find("hello", entrypoints.Origin{Location: entrypoints.Location{File: ini}, Plugins: map[string]string{"path": filepath.Base(binDir)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Egg("nosuch", entrypoints.Origin{}); !errors.Is(err, entrypoints.ErrNoDist) || !strings.Contains(err.Error(), "paster-plugin-nosuch") {
		t.Fatalf("Egg(nosuch) = %v", err)
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	hostApp := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host app %s", r.URL.Path)
	})
	pluginApp, err := d.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	stamp, err := d.Filters["stamp"](nil, entrypoints.NewLocal("value", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Filters["stamp"](nil, entrypoints.Local{}); err == nil || !strings.Contains(err.Error(), "value is required") {
		t.Fatalf("factory error not passed on: %v", err)
	}
	prefixHost, err := d.FilterApps["prefix"](hostApp, nil, entrypoints.NewLocal("text", "> "))
	if err != nil {
		t.Fatal(err)
	}
	refsBefore := h.refs.next.Load()
	prefixPlugin, err := d.FilterApps["prefix"](pluginApp, nil, entrypoints.NewLocal("text", ">> "))
	if err != nil {
		t.Fatal(err)
	}
	stampPlugin := stamp(pluginApp)
	if h.refs.next.Load() != refsBefore {
		t.Fatal("wrapping an app of the same plugin registered a host callback")
	}
	pd, err := h.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	otherPlugin, err := pd.Apps["probe"](nil, entrypoints.NewLocal("name", "in ptest"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		h     http.Handler
		body  string
		stamp string
	}{
		{"filter around host app", stamp(hostApp), "host app /x", "v1"},
		{"filter around plugin app", stampPlugin, "Hello, world!\n", "v1"},
		{"filter-app around host app", prefixHost, "> host app /x", ""},
		{"filter-app around plugin app", prefixPlugin, ">> Hello, world!\n", ""},
		{"filter around filter-app around host app", stamp(prefixHost), "> host app /x", "v1"},
		{"filter around an app of another plugin", http.StripPrefix("/x", stamp(otherPlugin)), "in ptest", "v1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := "/x"
			if strings.Contains(c.name, "another plugin") {
				path = "/x/name"
			}
			resp, err := http.Get(serve(t, c.h).URL + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if string(b) != c.body || resp.Header.Get("X-Stamp") != c.stamp {
				t.Fatalf("got %q stamp %q, want %q stamp %q", b, resp.Header.Get("X-Stamp"), c.body, c.stamp)
			}
		})
	}
}

// fakeLoader is a composite's Loader with fixed apps.
type fakeLoader map[string]http.Handler

func (l fakeLoader) App(name string, _ map[string]string) (http.Handler, error) {
	if h, ok := l[name]; ok {
		return h, nil
	}
	return nil, fmt.Errorf("no section %q", name)
}

func (l fakeLoader) Filter(name string, _ map[string]string) (entrypoints.Filter, error) {
	return nil, errors.New("no filters")
}

func (l fakeLoader) Server(name string, _ map[string]string) (entrypoints.Server, error) {
	return nil, errors.New("no servers")
}

func TestComposite(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	pluginApp, err := d.Apps["main"](nil, entrypoints.NewLocal("name", "composite"))
	if err != nil {
		t.Fatal(err)
	}
	l := fakeLoader{
		"hostapp":   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "host %s", r.URL.Path) }),
		"pluginapp": pluginApp,
	}
	app, err := d.Composites["urlmap"](l, nil, entrypoints.NewLocal("/h", "hostapp", "/p", "pluginapp"))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, app)
	mustGet(t, srv.URL+"/h/x", "host /x")
	mustGet(t, srv.URL+"/p/", "Hello, composite!\n")
	_, err = d.Composites["urlmap"](l, nil, entrypoints.NewLocal("/m", "missing"))
	if err == nil || !strings.Contains(err.Error(), `no section "missing"`) {
		t.Fatalf("loader error not passed on: %v", err)
	}
}

func TestServersAndCoroutines(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	hostApp := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "served by host app") })
	pluginApp, err := d.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unixGet := func(sock string) (int, string, error) {
		c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("http://plugin/")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	run := func(t *testing.T, start func(ctx context.Context, sock string) error, want string) {
		sock := filepath.Join(dir, t.Name()[strings.LastIndexByte(t.Name(), '/')+1:]+".sock")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- start(ctx, sock) }()
		var body string
		testsync.WaitFor(t, "the plugin server to answer", func() bool {
			code, b, err := unixGet(sock)
			body = b
			return err == nil && code == 200
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("server returned %v", err)
		}
		if body != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
	t.Run("server", func(t *testing.T) {
		run(t, func(ctx context.Context, sock string) error {
			srv, err := d.Servers["http"](nil, entrypoints.NewLocal("listen", "unix:"+sock))
			if err != nil {
				return err
			}
			return srv(ctx, hostApp)
		}, "served by host app")
	})
	t.Run("runner", func(t *testing.T) {
		run(t, func(ctx context.Context, sock string) error {
			return d.Runners["http-runner"](ctx, pluginApp, nil, entrypoints.NewLocal("listen", "unix:"+sock))
		}, "Hello, world!\n")
	})
	t.Run("coroutine", func(t *testing.T) {
		pd, err := h.Binary(bin("ptest"), entrypoints.Origin{})
		if err != nil {
			t.Fatal(err)
		}
		co, err := pd.Coroutines["waiter"](nil, entrypoints.Local{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- co(ctx) }()
		testsync.WaitFor(t, "the coroutine to start", func() bool { return strings.Contains(h.logs.String(), "waiter started") })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		testsync.WaitFor(t, "the coroutine to stop", func() bool { return strings.Contains(h.logs.String(), "waiter stopped") })
	})
}

func TestStreaming(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, srv := probe(t, h, "s")

	t.Run("flush reaches the client before the handler ends", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/stream?id=f1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		line, err := r.ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		// The handler is still blocked: it only continues after /release.
		mustGet(t, srv.URL+"/release?id=f1", "")
		rest, err := io.ReadAll(r)
		if err != nil || string(rest) != "second\n" {
			t.Fatalf("rest %q, %v", rest, err)
		}
	})
	t.Run("headers in order with duplicates", func(t *testing.T) {
		req, _ := http.NewRequest("GET", srv.URL+"/headers?q=a%20b", nil)
		req.Header.Add("X-Multi", "first")
		req.Header.Add("X-Multi", "second")
		req.Header.Add("X-Multi", "third")
		req.Host = "example.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct {
			Header                          map[string][]string
			Host, URI, Method, Query, Proto string
		}
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got.Header["X-Multi"], ",") != "first,second,third" || got.Host != "example.test" ||
			got.URI != "/headers?q=a%20b" || got.Query != "a b" || got.Method != "GET" || got.Proto != "HTTP/1.1" {
			t.Fatalf("request seen by plugin: %+v", got)
		}
		if strings.Join(resp.Header.Values("X-Dup"), ",") != "one,two" {
			t.Fatalf("response X-Dup = %v", resp.Header.Values("X-Dup"))
		}
	})
	t.Run("trailers", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/trailer")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "body" || resp.Trailer.Get("X-Checksum") != "abc123" || resp.Trailer.Get("X-Late") != "late" {
			t.Fatalf("body %q trailer %v", b, resp.Trailer)
		}
	})
	t.Run("echo large body both ways", func(t *testing.T) {
		data := make([]byte, 9<<20+123) // over gRPC's 4 MiB default
		_, _ = rand.Read(data)
		resp, err := http.Post(srv.URL+"/echo", "application/octet-stream", strings.NewReader(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != string(data) {
			t.Fatalf("echo: %d bytes back of %d, %v", len(b), len(data), err)
		}
		code, body := get(t, srv.URL+"/big?n="+strconv.Itoa(20<<20))
		if code != 200 || len(body) != 20<<20 {
			t.Fatalf("download: %d, %d bytes", code, len(body))
		}
	})
	t.Run("small post", func(t *testing.T) {
		resp, err := http.Post(srv.URL+"/count", "text/plain", strings.NewReader("12345"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "5" {
			t.Fatalf("count = %q", b)
		}
	})
	t.Run("client disconnect cancels the handler", func(t *testing.T) {
		for _, flush := range []string{"", "1"} {
			id := "c" + flush
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/block?flush="+flush+"&id="+id, nil)
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
			mustGet(t, srv.URL+"/started?id="+id, "yes")
			mustGet(t, srv.URL+"/cancelled?id="+id, "false")
			cancel()
			<-done
			testsync.WaitFor(t, "the plugin handler to see the cancellation", func() bool {
				_, b := get(t, srv.URL+"/cancelled?id="+id)
				return b == "true"
			})
		}
	})
	t.Run("panic is a 500 and the plugin keeps serving", func(t *testing.T) {
		code, _ := get(t, srv.URL+"/pid")
		if code != 200 {
			t.Fatal(code)
		}
		_, pid := get(t, srv.URL+"/pid")
		code, body := get(t, srv.URL+"/panic")
		if code != http.StatusInternalServerError {
			t.Fatalf("panic: %d %q", code, body)
		}
		resp, err := http.Get(srv.URL + "/panic-late")
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil {
				t.Fatalf("late panic gave a complete response %d %q", resp.StatusCode, b)
			}
		}
		mustGet(t, srv.URL+"/pid", pid)
		testsync.WaitFor(t, "the panic in the log", func() bool { return strings.Contains(h.logs.String(), "boom") })
	})
}

func TestUploadGiB(t *testing.T) {
	// Not parallel: measures the test process's memory.
	h := newHost(t, HostOptions{})
	_, srv := probe(t, h, "u")
	_, pid := get(t, srv.URL+"/pid")
	hostBefore := vm(t, "self", "VmHWM")
	const size = 1 << 30
	resp, err := http.Post(srv.URL+"/count", "application/octet-stream", io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != strconv.Itoa(size) {
		t.Fatalf("plugin counted %q bytes, want %d", b, size)
	}
	pluginPeak := vm(t, pid, "VmHWM")
	hostGrowth := vm(t, "self", "VmHWM") - hostBefore
	t.Logf("plugin peak RSS %d MiB, host peak RSS growth %d MiB", pluginPeak>>20, hostGrowth>>20)
	if pluginPeak > 150<<20 || hostGrowth > 150<<20 {
		t.Fatalf("1 GiB upload was buffered: plugin peak %d MiB, host growth %d MiB", pluginPeak>>20, hostGrowth>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestWebSocket(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Egg("wsecho", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := d.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, app)
	mustGet(t, srv.URL, "wsecho: connect with a WebSocket client\n")
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("x", 100<<10)
	for _, msg := range []string{"hello", "world", big} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
		}
	}
	if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after close: %v", err)
	}
}

// TestWebSocketThroughPluginServer: a WebSocket reaches a plugin app through
// a server that runs in another plugin process (two hops: client → hello's
// server → host → wsecho), as with development.ini's hijacked_runner.
func TestWebSocketThroughPluginServer(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	ws, err := h.Egg("wsecho", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	echo, err := ws.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	addr := helloServer(t, h, echo)
	var c *websocket.Conn
	testsync.WaitFor(t, "the plugin server to upgrade", func() bool {
		c, _, err = websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
		return err == nil
	})
	defer c.Close()
	for _, msg := range []string{"hello", strings.Repeat("y", 70<<10)} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
		}
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("after close: %v", err)
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, srv := probe(t, h, "l")
	mustGet(t, srv.URL+"/print", "")
	for _, want := range []string{
		`[WARN]  ptest: plugin warning: key=value`,
		`[INFO]  ptest: stray stdout line: stream=stdout`,
		`[WARN]  ptest: stray stderr line: stream=stderr`,
	} {
		testsync.WaitFor(t, fmt.Sprintf("log line %q", want), func() bool { return strings.Contains(h.logs.String(), want) })
	}
}

func TestCrashAndRestart(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{RestartBackoff: time.Millisecond})
	gate := make(chan struct{})
	h.restartGate = gate
	_, srv := probe(t, h, "survivor")
	hello, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := hello.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	otherSrv := serve(t, other)
	_, pid := get(t, srv.URL+"/pid")

	// A request in flight when the plugin dies gets 502.
	inflight := getLater(srv.URL + "/block?id=k")
	mustGet(t, srv.URL+"/started?id=k", "yes")
	n, _ := strconv.Atoi(pid)
	if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := <-inflight; code != http.StatusBadGateway {
		t.Fatalf("in-flight request got %d, want 502", code)
	}
	// New requests get 503 with Retry-After while the restart is held.
	testsync.WaitFor(t, "503 while restarting", func() bool {
		resp, err := http.Get(srv.URL + "/name")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""
	})
	mustGet(t, otherSrv.URL, "Hello, world!\n")
	close(gate)
	testsync.WaitFor(t, "the restarted plugin to serve", func() bool {
		code, _ := get(t, srv.URL+"/name")
		return code == 200
	})
	mustGet(t, srv.URL+"/name", "survivor") // the instance was recreated with its conf
	_, pid2 := get(t, srv.URL+"/pid")
	if pid2 == pid {
		t.Fatal("same pid after restart")
	}
	mustGet(t, otherSrv.URL, "Hello, world!\n")
}

// TestCrashLoopCooldown: past the crash-loop limit the plugin is started
// again after [plugins] crash_loop_cooldown, without a reload, and requests
// meanwhile are told when to retry.
// crashTwice starts a probe app with [plugins] crash_loop_cooldown =
// cooldown and makes its plugin exit twice (past MaxRestarts 1).
func crashTwice(t *testing.T, h testHost, cooldown string) *httptest.Server {
	t.Helper()
	_, srv := probeFrom(t, h, entrypoints.Origin{Plugins: map[string]string{"crash_loop_cooldown": cooldown}}, "x")
	pid := h.Plugins()[0].PID
	if code, _ := get(t, srv.URL+"/exit"); code != http.StatusBadGateway {
		t.Fatalf("first exit: %d", code)
	}
	testsync.WaitFor(t, "the first restart", func() bool {
		p := h.Plugins()[0]
		return p.State == StateRunning && p.PID != pid
	})
	if code, _ := get(t, srv.URL+"/exit"); code != http.StatusBadGateway {
		t.Fatalf("second exit: %d", code)
	}
	return srv
}

func TestCrashLoopCooldown(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{RestartBackoff: time.Millisecond, MaxRestarts: 1})
	srv := crashTwice(t, h, "1500ms")
	testsync.WaitFor(t, "the crash loop", func() bool { return h.Plugins()[0].State == StateCrashLoop })
	checkRetryAfter(t, srv.URL+"/name", h.Plugins()[0].NextRestart)
	testsync.WaitFor(t, "the restart after the cooldown", func() bool { return h.Plugins()[0].State == StateRunning })
	mustGet(t, srv.URL+"/name", "x")
	if !strings.Contains(h.logs.String(), "starting it again after the cooldown") {
		t.Errorf("the crash loop was not logged")
	}
}

// TestCrashLoopOff: crash_loop_cooldown = 0 gives up past the limit.
func TestCrashLoopOff(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{RestartBackoff: time.Millisecond, MaxRestarts: 1})
	if _, err := h.Binary(bin("ptest"), entrypoints.Origin{Plugins: map[string]string{"crash_loop_cooldown": "soon"}}); err == nil || !strings.Contains(err.Error(), "crash_loop_cooldown") {
		t.Fatalf("bad crash_loop_cooldown: %v", err)
	}
	srv := crashTwice(t, h, "0")
	testsync.WaitFor(t, "the host to give up", func() bool { return h.Plugins()[0].State == StateFailed })
	resp, err := http.Get(srv.URL + "/name")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("failed plugin answered %d Retry-After %q, want 503 without", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestRetryAfterIsTheWait: Retry-After is the time until the restart is
// tried, not a fixed second.
func TestRetryAfterIsTheWait(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{RestartBackoff: 8 * time.Second})
	_, srv := probe(t, h, "x")
	if code, _ := get(t, srv.URL+"/exit"); code != http.StatusBadGateway {
		t.Fatalf("exit: %d", code)
	}
	testsync.WaitFor(t, "the restart to be scheduled", func() bool { return h.Plugins()[0].State == StateRestarting })
	checkRetryAfter(t, srv.URL+"/name", h.Plugins()[0].NextRestart)
}

// checkRetryAfter GETs url while a start attempt is due at next: the answer
// is 503 with Retry-After the seconds until next, rounded up (at least 1),
// as they were while the request was served. A restart that came first
// (the machine stalled past next) is logged, not failed.
func checkRetryAfter(t *testing.T, url string, next time.Time) {
	t.Helper()
	if next.IsZero() {
		t.Fatal("no start attempt scheduled")
	}
	before := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after := time.Now()
	if resp.StatusCode != http.StatusServiceUnavailable && after.After(next) {
		t.Logf("restarted before the request: %d", resp.StatusCode)
		return
	}
	wait := func(at time.Time) int { return max(1, int((next.Sub(at)+time.Second-1)/time.Second)) }
	got, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusServiceUnavailable || got < wait(after) || got > wait(before) {
		t.Fatalf("got %d Retry-After %q with the start attempt due in %s to %s", resp.StatusCode, resp.Header.Get("Retry-After"), next.Sub(after), next.Sub(before))
	}
}

func TestHostKilled(t *testing.T) {
	t.Parallel()
	host, pid, _ := startHostHelper(t)
	if !alive(pid) {
		t.Fatal("plugin not running")
	}
	_ = host.Process.Kill()
	_ = host.Wait()
	testsync.WaitFor(t, "the plugin to die with its host", func() bool { return !alive(pid) })
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	helloSum, err := FileSum(bin("hello"))
	if err != nil {
		t.Fatal(err)
	}
	trueCopy := filepath.Join(dir, "true")
	if b, err := os.ReadFile("/bin/true"); err == nil {
		_ = os.WriteFile(trueCopy, b, 0o755)
	}
	wrong := filepath.Join(dir, BinaryPrefix+"other")
	if b, err := os.ReadFile(bin("ptest")); err == nil {
		_ = os.WriteFile(wrong, b, 0o755)
	}
	cases := []struct {
		name    string
		open    func(h testHost) error
		is      error
		mention []string
	}{
		{"checksum mismatch", func(h testHost) error {
			_, err := h.Egg("hello", entrypoints.Origin{Plugins: map[string]string{"sha256.hello": strings.Repeat("ab", 32)}})
			return err
		}, ErrChecksum, []string{bin("hello"), strings.Repeat("ab", 32), hex.EncodeToString(helloSum)}},
		{"bad pin", func(h testHost) error {
			_, err := h.Egg("hello", entrypoints.Origin{Plugins: map[string]string{"sha256.hello": "xyz"}})
			return err
		}, nil, []string{"64 hex digits"}},
		{"shell script", func(h testHost) error {
			_, err := h.Binary(script("script", "#!/bin/sh\necho hello there\n"), entrypoints.Origin{})
			return err
		}, ErrNotPlugin, []string{"script", "plugins.Serve"}},
		{"/bin/true", func(h testHost) error {
			_, err := h.Binary(trueCopy, entrypoints.Origin{})
			return err
		}, ErrNotPlugin, []string{trueCopy, "plugins.Serve"}},
		{"not executable format", func(h testHost) error {
			_, err := h.Binary(script("garbage", "\x00\x01\x02garbage"), entrypoints.Origin{})
			return err
		}, ErrNotPlugin, []string{"garbage"}},
		{"protocol version", func(h testHost) error {
			_, err := h.Binary(bin("badversion"), entrypoints.Origin{})
			return err
		}, ErrProtocol, []string{bin("badversion"), "protocol 1"}},
		{"start timeout", func(h testHost) error {
			_, err := h.Binary(script("slow", "#!/bin/sh\nexec sleep 30\n"), entrypoints.Origin{})
			return err
		}, ErrStartTimeout, []string{"slow", "handshake within 500ms"}},
		{"wrong dist", func(h testHost) error {
			_, err := h.Egg("other", entrypoints.Origin{})
			return err
		}, ErrWrongDist, []string{wrong, "serves dist ptest"}},
		{"missing dist", func(h testHost) error {
			_, err := h.Egg("absent", entrypoints.Origin{})
			return err
		}, entrypoints.ErrNoDist, []string{"paster-plugin-absent"}},
		{"pinned checksum accepted", func(h testHost) error {
			_, err := h.Egg("hello", entrypoints.Origin{Plugins: map[string]string{"sha256.hello": hex.EncodeToString(helloSum)}})
			return err
		}, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := newHost(t, HostOptions{StartTimeout: 500 * time.Millisecond, PluginDirs: []string{binDir, dir}})
			checkErr(t, c.open(h), c.is, c.mention)
		})
	}
}

func TestNoLeaks(t *testing.T) {
	// Not parallel: counts the process's goroutines.
	before := runtime.NumGoroutine()
	h := NewHost(HostOptions{PluginDirs: []string{binDir}, Logger: hclog.NewNullLogger()})
	d, err := h.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := d.Apps["probe"](nil, entrypoints.NewLocal("name", "leak"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	srv := serve(t, app)
	c := &http.Client{Transport: tr}
	for _, path := range []string{"/name", "/trailer", "/big?n=100000"} {
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	pid := h.Plugins()[0].PID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
	srv.Close()
	if alive(pid) {
		t.Fatalf("plugin %d alive after Close", pid)
	}
	testsync.WaitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
	code, _ := func() (int, error) {
		rec := &statusRecorder{header: http.Header{}}
		req, _ := http.NewRequest("GET", "/name", nil)
		app.ServeHTTP(rec, req)
		return rec.code, nil
	}()
	if code != http.StatusServiceUnavailable {
		t.Fatalf("request after Close: %d", code)
	}
}

type statusRecorder struct {
	header http.Header
	code   int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.code = code }

func TestCore(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	core := runner.NewCore(runner.CoreOptions{})
	defer core.Close()
	h.SetCore(core)
	_, a := probe(t, h, "a")
	// A second process of the same plugin (another file): a request parked
	// in one is woken by a signal sent from the other.
	other := filepath.Join(t.TempDir(), "ptest-copy")
	data, err := os.ReadFile(bin("ptest"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, data, 0o755); err != nil {
		t.Fatal(err)
	}
	d2, err := h.Binary(other, entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app2, err := d2.Apps["probe"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	b := serve(t, app2)

	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(a.URL + "/wait?name=go&timeout=30s")
		if err != nil {
			got <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(body)
	}()
	testsync.WaitFor(t, "the plugin request to park", func() bool { return core.Stats().Waiters == 1 })
	mustGet(t, b.URL+"/signal?name=go&value=v1", "1 <nil>")
	if s := <-got; s != "value v1" {
		t.Fatalf("parked request got %q", s)
	}
	mustGet(t, a.URL+"/wait?name=never&timeout=20ms", "timeout")
	mustGet(t, a.URL+"/pubsub?topic=t", "1 1 m1")
	n, err := core.Signal(context.Background(), "nobody", nil)
	if err != nil || n != 0 {
		t.Fatal(n, err)
	}
	testsync.WaitFor(t, "subscriptions to close", func() bool { return core.Stats().Subscriptions == 0 })
}

// TestCoreLimits: a plugin cannot make the host's Core hold more than its
// limits allow. A value over MaxValue is refused with an error the plugin
// sees as ErrTooLarge, for Publish and Signal alike, and a flood of large
// messages over many topics keeps the retained bytes within
// RetainTotalBytes, the topics emptied by it forgotten.
func TestCoreLimits(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	const maxValue, total = 64 << 10, 1 << 20
	core := runner.NewCore(runner.CoreOptions{MaxValue: maxValue, RetainTotalBytes: total})
	defer core.Close()
	h.SetCore(core)
	_, a := probe(t, h, "limits")

	for _, op := range []string{"publish", "signal"} {
		mustGet(t, fmt.Sprintf("%s/big-value?op=%s&name=n&size=%d", a.URL, op, maxValue), "ok")
		resp, err := http.Get(fmt.Sprintf("%s/big-value?op=%s&name=n&size=%d", a.URL, op, maxValue+1))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "error too-large=true: ") || !strings.Contains(string(body), "65537 bytes") {
			t.Fatalf("%s of %d bytes through the plugin: %q, want an error wrapping runner.ErrTooLarge naming the size", op, maxValue+1, body)
		}
	}
	for i := range 64 {
		mustGet(t, fmt.Sprintf("%s/big-value?name=flood%d&size=%d", a.URL, i, maxValue), "ok")
		if st := core.Stats(); st.RetainedBytes > total {
			t.Fatalf("after %d publishes of %d bytes the Core retains %d bytes, over its bound of %d", i+1, maxValue, st.RetainedBytes, total)
		}
	}
	if st := core.Stats(); st.Topics > total/maxValue+1 {
		t.Fatalf("the Core keeps %d topics; topics emptied by the bound should be forgotten", st.Topics)
	}
}

func TestCloseDrains(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	core := runner.NewCore(runner.CoreOptions{})
	defer core.Close()
	h.SetCore(core)
	_, srv := probe(t, h, "d")
	pid := h.Plugins()[0].PID
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/wait?name=drain&timeout=30s")
		if err != nil {
			got <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- fmt.Sprint(resp.StatusCode, " ", string(body))
	}()
	testsync.WaitFor(t, "the request to park", func() bool { return core.Stats().Waiters == 1 })
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		closed <- h.Close(ctx)
	}()
	testsync.WaitFor(t, "the host to stop taking requests", func() bool {
		code, _ := get(t, srv.URL+"/name")
		return code == http.StatusServiceUnavailable
	})
	if !alive(pid) {
		t.Fatal("plugin stopped before its request finished")
	}
	if n, err := core.Signal(context.Background(), "drain", []byte("done")); n != 1 || err != nil {
		t.Fatalf("Signal = %d, %v", n, err)
	}
	if s := <-got; s != "200 value done" {
		t.Fatalf("in-flight request during Close got %q", s)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatal("plugin alive after Close")
	}
}

// TestPluginsUnknownKey: a misspelt key of [plugins] is an error naming it,
// with the key it was probably meant to be, not silently ignored (a
// misspelt crash_loop_cooldown or allow_writable would otherwise change
// nothing without a word).
func TestPluginsUnknownKey(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	for key, want := range map[string]string{
		"crash_loop_cooldow": `did you mean "crash_loop_cooldown"?`,
		"allow_writeable":    `did you mean "allow_writable"?`,
		"bogus":              "unknown key of [plugins]",
	} {
		_, err := h.Binary(bin("ptest"), entrypoints.Origin{Plugins: map[string]string{key: "1s"}})
		if err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), want) {
			t.Errorf("[plugins] %s: %v, want an error naming it with %q", key, err, want)
		}
	}
	if _, err := h.Binary(bin("ptest"), entrypoints.Origin{Plugins: map[string]string{"sha256.other": strings.Repeat("0", 64), "path": "x"}}); err != nil {
		t.Errorf("pins of other binaries and path: %v", err)
	}
}
