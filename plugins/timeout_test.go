package plugins

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
)

// TestHandlerTimeoutReachesPlugin serves a plugin app (the ptest probe, a
// real plugin process) from a runner.HTTPServer with handler_timeout: its
// /block handler waits for its context to end and never answers. The
// server answers 503 (or, when the handler had flushed a first line, ends
// the connection), and the cancellation reaches the handler inside the
// plugin process, which records it.
func TestHandlerTimeoutReachesPlugin(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := d.Apps["probe"](nil, entrypoints.NewLocal("name", "timeout"))
	if err != nil {
		t.Fatal(err)
	}
	ctl := serve(t, app) // unbounded, to ask the plugin what it saw

	srv, err := runner.NewHTTPServer(entrypoints.NewLocal("port", "0", "handler_timeout", "300ms"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, app) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	<-srv.Bound()
	base := "http://" + srv.Addr().String()

	// Without the bound the requests would hang: the client's own limit
	// turns that into a failure.
	client := &http.Client{Timeout: 30 * time.Second}
	for _, tc := range []struct{ id, flush string }{{"t503", ""}, {"tcut", "1"}} {
		t.Run(tc.id, func(t *testing.T) {
			resp, err := client.Get(base + "/block?id=" + tc.id + "&flush=" + tc.flush)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch tc.flush {
			case "":
				if resp.StatusCode != http.StatusServiceUnavailable || err != nil {
					t.Fatalf("got %d %q, %v; want 503", resp.StatusCode, b, err)
				}
			default:
				if resp.StatusCode != 200 || string(b) != "started\n" || err == nil {
					t.Fatalf("got %d %q, %v; want the started line, then the connection ended", resp.StatusCode, b, err)
				}
			}
			testsync.WaitFor(t, "the plugin handler to see its context cancelled", func() bool {
				_, b := get(t, ctl.URL+"/cancelled?id="+tc.id)
				return b == "true"
			})
		})
	}
}
