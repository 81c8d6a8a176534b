package plugins

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// TestPluginRunnerStartup: a server runner in a plugin gets the startup
// coroutines of its context run on a host scheduler, with the host's Core,
// gated on readiness (a plugin coroutine's Ready crosses the boundary), and
// stopped after the runner returns.
func TestPluginRunnerStartup(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	core := runner.NewCore(runner.CoreOptions{})
	defer core.Close()
	h.SetCore(core)
	hello, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := hello.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	ptest, err := h.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	newCo := func(name string) entrypoints.Coroutine {
		co, err := ptest.Coroutines[name](nil, entrypoints.Local{})
		if err != nil {
			t.Fatal(err)
		}
		return co
	}

	t.Run("runs, gates and stops", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s.sock")
		gotCore := make(chan runner.Core, 1)
		stopped := make(chan struct{})
		hostCo := func(ctx context.Context) error {
			gotCore <- runner.CoreFrom(ctx)
			runner.Ready(ctx)
			<-ctx.Done()
			close(stopped)
			return nil
		}
		ctx, cancel := context.WithCancel(runner.WithCore(context.Background(), core))
		ctx = runner.WithStartup(ctx,
			runner.StartupCoroutine{Name: "host", Run: hostCo, Policy: runner.Policy{Required: true}},
			runner.StartupCoroutine{Name: "plugin", Run: newCo("ready"), Policy: runner.Policy{Required: true}},
		)
		done := make(chan error, 1)
		go func() {
			done <- hello.Runners["http-runner"](ctx, app, nil, entrypoints.NewLocal("listen", "unix:"+sock, "ready_timeout", "0"))
		}()
		// It serves only once both required coroutines reported ready; the
		// plugin's did so from inside the plugin.
		waitFor(t, 20*time.Second, "the plugin runner to serve", func() bool {
			_, err := os.Stat(sock)
			return err == nil
		})
		if !strings.Contains(h.logs.String(), "ready coroutine reported ready") {
			t.Fatal("the plugin runner serves before the plugin coroutine reported ready")
		}
		if c := <-gotCore; c != runner.Core(core) {
			t.Fatalf("the coroutine's Core is %T, want the host's", c)
		}
		if body := unixGet(t, sock); body != "Hello, world!\n" {
			t.Fatalf("plugin runner answered %q", body)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("runner returned %v", err)
		}
		select {
		case <-stopped:
		default:
			t.Fatal("the host coroutine was still running when the runner returned")
		}
		waitFor(t, 10*time.Second, "the plugin coroutine to stop", func() bool {
			return strings.Contains(h.logs.String(), "ready coroutine stopped")
		})
	})

	t.Run("not ready, not serving", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s.sock")
		ctx := runner.WithStartup(context.Background(), runner.StartupCoroutine{
			Name: "never", Run: newCo("waiter"), Policy: runner.Policy{Required: true},
		})
		err := hello.Runners["http-runner"](ctx, app, nil, entrypoints.NewLocal("listen", "unix:"+sock, "ready_timeout", "50ms"))
		if !errors.Is(err, runner.ErrNotReady) {
			t.Fatalf("runner returned %v, want ErrNotReady", err)
		}
		if _, err := os.Stat(sock); err == nil {
			t.Fatal("the plugin runner bound although a required coroutine was not ready")
		}
	})
}

// TestRequestScope: a request forwarded into a plugin uses the Core of the
// host request; closing that scope (what runner.Runner does at shutdown)
// ends the plugin's parked wait with ErrClosed at once, while the host's
// Core stays open.
func TestRequestScope(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	core := runner.NewCore(runner.CoreOptions{})
	defer core.Close()
	h.SetCore(core)
	d, err := h.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := d.Apps["probe"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	scope := runner.NewCoreScope(core)
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.ServeHTTP(w, r.WithContext(runner.WithCore(r.Context(), scope)))
	}))
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/wait?name=scoped&timeout=60s")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	waitFor(t, 10*time.Second, "the plugin request to park", func() bool { return core.Stats().Waiters == 1 })
	scope.Close()
	if s := <-got; !strings.HasPrefix(s, "error: ") || !strings.Contains(s, "closed") {
		t.Fatalf("parked request got %q, want an ErrClosed error", s)
	}
	// The host's Core is still open for everyone else.
	if _, err := core.Signal(context.Background(), "x", nil); err != nil {
		t.Fatal(err)
	}
}

func unixGet(t *testing.T, sock string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://plugin/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
