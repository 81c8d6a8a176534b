package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// waitApp is the seed's wait_app, in short: /wait parks on signal "abc"
// (timeout from the query, default NoTimeout) and says how the wait ended;
// /signal signals "abc" with msg and answers how many it woke.
func waitApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/wait", func(w http.ResponseWriter, req *http.Request) {
		timeout := NoTimeout
		if t := req.FormValue("timeout"); t != "" {
			timeout, _ = time.ParseDuration(t)
		}
		v, err := CoreFrom(req.Context()).WaitForSignal(req.Context(), "abc", timeout)
		switch {
		case err == nil:
			fmt.Fprintf(w, "signalled: %s", v)
		case errors.Is(err, ErrTimeout):
			fmt.Fprint(w, "timeout")
		case errors.Is(err, ErrClosed):
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "closed")
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("/signal", func(w http.ResponseWriter, req *http.Request) {
		n, err := CoreFrom(req.Context()).Signal(req.Context(), "abc", []byte(req.FormValue("msg")))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, n)
	})
	return mux
}

func serverLocal(pairs ...string) entrypoints.Local {
	l := entrypoints.NewLocal("host", "127.0.0.1", "port", "0")
	for i := 0; i < len(pairs); i += 2 {
		l = l.With(pairs[i], pairs[i+1], entrypoints.Location{File: "dev.ini", Line: 3 + i, Section: "server:main"})
	}
	return l
}

func newTestRunner(t *testing.T, local entrypoints.Local) *Runner {
	t.Helper()
	r, err := New(waitApp(), local)
	if err != nil {
		t.Fatal(err)
	}
	r.Logger = hclog.NewNullLogger()
	return r
}

// get fetches path from the runner and returns the status and body.
func get(t *testing.T, r *Runner, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Get("http://" + r.HTTP.Addr().String() + path)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

type response struct {
	code int
	body string
}

func getAsync(t *testing.T, r *Runner, path string) <-chan response {
	ch := make(chan response, 1)
	go func() {
		code, body := get(t, r, path)
		ch <- response{code, body}
	}()
	return ch
}

func startRun(t *testing.T, r *Runner, ctx context.Context) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return done
}

// TestRunServesAndShutsDown goes through a runner's whole life with a core
// given by the host: readiness gating by a required coroutine, another
// one using the Core, the wait app's signal and timeout paths
// over real HTTP, and a shutdown that answers parked requests.
func TestRunServesAndShutsDown(t *testing.T) {
	t.Parallel()
	host := newTestCore(t, CoreOptions{})
	release := make(chan struct{})
	gateStopped := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = WithCore(ctx, host)

	r := newTestRunner(t, serverLocal("shutdown_timeout", "20s"))
	r.Sched.Add("gate", func(ctx context.Context) error {
		defer close(gateStopped)
		<-release
		Ready(ctx)
		<-ctx.Done()
		return nil
	}, Policy{Required: true})
	coreSeen := make(chan Core, 1)
	r.Sched.Add("ticker", func(ctx context.Context) error {
		coreSeen <- CoreFrom(ctx)
		CoreFrom(ctx).Publish(ctx, "ticks", []byte("tick"))
		<-ctx.Done()
		return nil
	})
	done := startRun(t, r, ctx)

	if c := testsync.Recv(t, "the ticker's core", coreSeen); c != Core(host) {
		t.Fatalf("the coroutine got core %T, want the host's", c)
	}
	if r.Core != Core(host) {
		t.Fatalf("r.Core is %T, want the host's core", r.Core)
	}
	close(release)
	testsync.Recv(t, "the server bound", r.HTTP.Bound())

	// Signal path: two parked requests, one Signal over HTTP.
	w1, w2 := getAsync(t, r, "/wait"), getAsync(t, r, "/wait")
	testsync.WaitFor(t, "two parked requests", func() bool { return host.Stats().Waiters == 2 })
	if code, body := get(t, r, "/signal?msg="+url.QueryEscape("hi <there>")); code != 200 || body != "2" {
		t.Fatalf("/signal = %d %q, want 200 \"2\"", code, body)
	}
	for _, w := range []<-chan response{w1, w2} {
		if resp := testsync.Recv(t, "a woken request", w); resp.body != "signalled: hi <there>" {
			t.Fatalf("woken request got %d %q", resp.code, resp.body)
		}
	}
	// A signal sent by the host (or a plugin) reaches a request too.
	w3 := getAsync(t, r, "/wait")
	testsync.WaitFor(t, "a parked request", func() bool { return host.Stats().Waiters == 1 })
	if n, _ := host.Signal(context.Background(), "abc", []byte("from host")); n != 1 {
		t.Fatalf("host Signal woke %d, want 1", n)
	}
	if resp := testsync.Recv(t, "request", w3); resp.body != "signalled: from host" {
		t.Fatalf("request got %q", resp.body)
	}
	// Timeout path.
	if code, body := get(t, r, "/wait?timeout=1ms"); body != "timeout" {
		t.Fatalf("/wait?timeout=1ms = %d %q, want timeout", code, body)
	}

	// Shutdown with parked requests: each gets a definite answer.
	parked := []<-chan response{getAsync(t, r, "/wait"), getAsync(t, r, "/wait"), getAsync(t, r, "/wait")}
	testsync.WaitFor(t, "three parked requests", func() bool { return host.Stats().Waiters == 3 })
	cancel()
	for _, p := range parked {
		if resp := testsync.Recv(t, "a parked request's answer", p); resp.code != http.StatusServiceUnavailable || resp.body != "closed" {
			t.Fatalf("parked request at shutdown got %d %q, want 503 closed", resp.code, resp.body)
		}
	}
	if err := testsync.Recv(t, "Run", done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	testsync.Recv(t, "the gate coroutine's exit", gateStopped)
	for _, st := range r.Sched.Status() {
		if st.State != StateStopped {
			t.Errorf("after Run: %s is %v", st.Name, st.State)
		}
	}
	// The host's core outlives the runner.
	if _, err := host.Publish(context.Background(), "ticks", nil); err != nil {
		t.Fatalf("the host's core was closed by the runner: %v", err)
	}
	if st := host.Stats(); st.Waiters != 0 || st.Retained != 2 {
		t.Fatalf("host core after Run: %+v", st)
	}
}

func TestRunOwnCore(t *testing.T) {
	t.Parallel()
	r := newTestRunner(t, serverLocal("sched_default_timeout", "1ms"))
	ctx, cancel := context.WithCancel(context.Background())
	done := startRun(t, r, ctx)
	testsync.Recv(t, "bound", r.HTTP.Bound())
	// sched_default_timeout applies to a wait without a timeout.
	if _, body := get(t, r, "/wait?timeout=0s"); body != "timeout" {
		t.Fatalf("/wait with the default timeout = %q", body)
	}
	cancel()
	if err := testsync.Recv(t, "Run", done); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Core.Publish(context.Background(), "t", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("the runner's own core is open after Run: %v", err)
	}
}

func TestRunNotReady(t *testing.T) {
	t.Parallel()
	r := newTestRunner(t, serverLocal("ready_timeout", "0.001"))
	stopped := make(chan struct{})
	r.Sched.Add("never-ready", func(ctx context.Context) error {
		defer close(stopped)
		<-ctx.Done()
		return nil
	}, Policy{Required: true})
	err := r.Run(context.Background())
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "never-ready") {
		t.Fatalf("Run = %v; want ErrNotReady naming never-ready", err)
	}
	testsync.Recv(t, "the coroutine stopped", stopped)
	select {
	case <-r.HTTP.Bound():
		t.Fatal("the server bound although a required coroutine was not ready")
	default:
	}
}

func TestRunStuckCoroutine(t *testing.T) {
	t.Parallel()
	r := newTestRunner(t, serverLocal("shutdown_timeout", "0.01"))
	release := make(chan struct{})
	defer close(release)
	r.Sched.Add("stubborn", func(ctx context.Context) error { <-release; return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := startRun(t, r, ctx)
	testsync.Recv(t, "bound", r.HTTP.Bound())
	cancel()
	err := testsync.Recv(t, "Run", done)
	var se *StopError
	if !errors.As(err, &se) || len(se.Names) != 1 || se.Names[0] != "stubborn" {
		t.Fatalf("Run = %v; want a StopError naming stubborn", err)
	}
}

func TestRunStartupErrors(t *testing.T) {
	t.Parallel()
	co := func(ctx context.Context) error { <-ctx.Done(); return nil }
	// Stopped before serving: a clean return.
	r := newTestRunner(t, serverLocal())
	r.Sched.Add("gate", co, Policy{Required: true})
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(cctx); err != nil {
		t.Fatalf("Run with a cancelled context = %v, want nil", err)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		local entrypoints.Local
		err   string
		check func(t *testing.T, r *Runner)
	}{
		{"defaults", serverLocal(), "", func(t *testing.T, r *Runner) {
			o := r.own.Options()
			if r.ReadyTimeout != DefaultReadyTimeout || o.DefaultTimeout != 0 || o.RetainCount != DefaultRetainCount || o.RetainAge != DefaultRetainAge {
				t.Errorf("ready %v, core options %+v", r.ReadyTimeout, o)
			}
			if o.MaxValue != DefaultMaxValue || o.RetainBytes != DefaultRetainBytes || o.RetainTotalBytes != DefaultRetainTotalBytes {
				t.Errorf("size limits %+v, want the defaults", o)
			}
		}},
		{"size limits", serverLocal("core_max_value", "64k", "pubsub_retain_bytes", "1m", "pubsub_retain_total_bytes", "0"), "", func(t *testing.T, r *Runner) {
			if o := r.own.Options(); o.MaxValue != 64<<10 || o.RetainBytes != 1<<20 || o.RetainTotalBytes != -1 {
				t.Errorf("size limits %+v, want 64k, 1m and none", o)
			}
		}},
		{"set", serverLocal("sched_default_timeout", "5", "ready_timeout", "0", "pubsub_retain_count", "0",
			"pubsub_retain_age", "1h", "sched_default_priority", "3", "shutdown_timeout", "2s"), "", func(t *testing.T, r *Runner) {
			o := r.own.Options()
			if r.ReadyTimeout != 0 || o.DefaultTimeout != 5*time.Second || o.RetainCount != -1 || o.RetainAge != time.Hour {
				t.Errorf("ready %v, core options %+v", r.ReadyTimeout, o)
			}
			if r.HTTP.Config().ShutdownTimeout != 2*time.Second {
				t.Errorf("the HTTP server did not get shutdown_timeout: %+v", r.HTTP.Config())
			}
		}},
		{"none is -1", serverLocal("sched_default_timeout", "-1"), "", func(t *testing.T, r *Runner) {
			if d := r.own.Options().DefaultTimeout; d != 0 {
				t.Errorf("default timeout %v, want none", d)
			}
		}},
		{"bad default timeout", serverLocal("sched_default_timeout", "soon"), "dev.ini:3 [server:main] sched_default_timeout: bad duration", nil},
		{"negative ready timeout", serverLocal("ready_timeout", "-1"), "ready_timeout: negative", nil},
		{"bad retain count", serverLocal("pubsub_retain_count", "lots"), "pubsub_retain_count: bad integer", nil},
		{"unbounded retention", serverLocal("pubsub_retain_count", "0", "pubsub_retain_age", "0"), "cannot both be 0", nil},
		{"bad max value", serverLocal("core_max_value", "huge"), "dev.ini:3 [server:main] core_max_value: bad size", nil},
		{"max value over a topic", serverLocal("core_max_value", "2m", "pubsub_retain_bytes", "1m"), "core_max_value (2097152 bytes) is over pubsub_retain_bytes", nil},
		{"max value over all topics", serverLocal("core_max_value", "2m", "pubsub_retain_total_bytes", "1m"), "over pubsub_retain_total_bytes", nil},
		{"bad http key", serverLocal("port", "http"), "port: bad integer", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := New(http.NotFoundHandler(), tc.local)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("New = %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.own.Close()
			tc.check(t, r)
		})
	}
	if _, err := New(nil, serverLocal()); err == nil {
		t.Error("New with a nil app succeeded")
	}
}
