package plugins

import (
	"context"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
)

// TestPluginRunnerCoroutinesVisible: the coroutines a server runner in a
// plugin adds in code reach the host's runner.Scheds with their state,
// restarts and last error while it runs, and leave it when it stops.
func TestPluginRunnerCoroutinesVisible(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := d.Apps["probe"](nil, entrypoints.NewLocal("name", "r"))
	if err != nil {
		t.Fatal(err)
	}
	scheds := &runner.Scheds{}
	ctx, cancel := context.WithCancel(runner.WithScheds(context.Background(), scheds))
	done := make(chan error, 1)
	go func() {
		done <- d.Runners["clockrunner"](ctx, app, nil, entrypoints.NewLocal("host", "127.0.0.1", "port", "0"))
	}()
	var st []runner.CoroutineStatus
	testsync.WaitFor(t, "the clock coroutine failing", func() bool {
		st = scheds.Status()
		return len(st) == 1 && st[0].Name == "clock" && st[0].Restarts > 1 &&
			st[0].LastError != nil && st[0].LastError.Error() == "tick failed"
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the runner did not stop")
	}
	if st := scheds.Status(); len(st) != 0 {
		t.Fatalf("after the runner returned: %+v", st)
	}
}
