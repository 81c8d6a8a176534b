package plugins

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
)

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
	testsync.WaitFor(t, "the plugin request to park", func() bool { return core.Stats().Waiters == 1 })
	scope.Close()
	if s := <-got; !strings.HasPrefix(s, "error: ") || !strings.Contains(s, "closed") {
		t.Fatalf("parked request got %q, want an ErrClosed error", s)
	}
	// The host's Core is still open for everyone else.
	if _, err := core.Signal(context.Background(), "x", nil); err != nil {
		t.Fatal(err)
	}
}
