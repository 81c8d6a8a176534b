//go:build linux

package plugins

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
)

var (
	chatOnce sync.Once
	chatErr  error
)

// buildChat builds the chat example's plugin (its hijacked_runner serves
// with runner's HTTPServer) into binDir, once.
func buildChat(t *testing.T) string {
	t.Helper()
	chatOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", binDir+"/", "github.com/paster-dev/paster/examples/chat/cmd/paster-plugin-chat").CombinedOutput()
		if err != nil {
			chatErr = err
			t.Logf("%s", out)
		}
	})
	if chatErr != nil {
		t.Fatalf("building the chat plugin: %v", chatErr)
	}
	return bin("chat")
}

// text answers every request with s.
func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) })
}

// TestLentListenersHandOver: a server runner in a plugin process takes its
// socket from the host's ListenerPool (the host lends it), so that servers
// in the host and in the plugin hand the one socket over to each other
// under load, both ways, without a failed request or a refused connection;
// and once the plugin's server has returned, the host's pool knows that no
// server uses the socket any more.
func TestLentListenersHandOver(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Binary(buildChat(t), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	pool := runner.NewListenerPool()
	defer pool.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	local := entrypoints.NewLocal("host", "127.0.0.1", "port", port, "shutdown_timeout", "5")

	type server struct {
		view   *runner.ListenerView
		cancel context.CancelFunc
		done   chan error
	}
	// start runs a server on the pool and waits until it accepts.
	start := func(inPlugin bool, app http.Handler) *server {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		s := &server{view: pool.View(), cancel: cancel, done: make(chan error, 1)}
		ready := make(chan struct{})
		var once sync.Once
		ctx = runner.WithReadyFunc(runner.WithListeners(ctx, s.view), func() { once.Do(func() { close(ready) }) })
		go func() {
			if inPlugin {
				s.done <- d.Runners["hijacked_runner"](ctx, app, nil, local)
				return
			}
			srv, err := runner.NewHTTPServer(local, nil)
			if err != nil {
				s.done <- err
				return
			}
			s.done <- srv.Serve(ctx, app)
		}()
		select {
		case <-ready:
		case err := <-s.done:
			t.Fatalf("server did not start: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("server did not report ready")
		}
		return s
	}
	// stop detaches s from the socket and stops it, as paster serve does.
	stop := func(s *server) {
		t.Helper()
		s.view.Detach(2 * time.Second)
		s.cancel()
		if err := <-s.done; err != nil {
			t.Errorf("server stopped with %v", err)
		}
	}

	first := start(false, text("host 1"))
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	seen := sync.Map{} // body -> true
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: i%2 == 1}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.CloseIdleConnections()
			for {
				select {
				case <-quit:
					return
				default:
				}
				sent.Add(1)
				resp, err := c.Get("http://" + addr + "/")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						seen.Store(string(b), true)
						continue
					}
					err = &net.AddrError{Err: "status " + strconv.Itoa(resp.StatusCode), Addr: string(b)}
				}
				failed.Add(1)
				firstErr.CompareAndSwap(nil, time.Now().Format("15:04:05.000000 ")+err.Error())
			}
		}()
	}
	served := func(body string) {
		t.Helper()
		testsync.WaitFor(t, body+" to answer", func() bool { _, ok := seen.Load(body); return ok })
		n := sent.Load()
		testsync.WaitFor(t, "requests to "+body, func() bool { return sent.Load() > n+100 })
	}

	served("host 1")
	plugin := start(true, text("plugin 1"))
	stop(first)
	served("plugin 1")
	second := start(true, text("plugin 2")) // beside, in the same process
	stop(plugin)
	served("plugin 2")
	last := start(false, text("host 2"))
	stop(second)
	served("host 2")
	close(quit)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed across the hand-overs; first: %v", n, sent.Load(), firstErr.Load())
	}
	if pruned := pool.Prune(); len(pruned) != 0 {
		t.Errorf("Prune closed %v while the host's server uses it", pruned)
	}
	stop(last)
	if pruned := pool.Prune(); len(pruned) != 1 || pruned[0] != addr {
		t.Errorf("Prune once every server stopped: %v, want [%s] (a plugin server's listener not released?)", pruned, addr)
	}
}
