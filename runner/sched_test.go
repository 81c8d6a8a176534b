package runner

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// testSched returns a scheduler whose backoff waits are recorded and
// skipped (they end at once unless the scheduler is stopping), and whose log
// goes to the returned buffer.
func testSched(t testing.TB) (*Sched, *testsync.Buffer, func() []time.Duration) {
	t.Helper()
	buf := &testsync.Buffer{}
	s := NewSched(hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug}))
	var mu sync.Mutex
	var delays []time.Duration
	s.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
		return ctx.Err()
	}
	t.Cleanup(func() {
		if err := s.Stop(time.Minute); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return s, buf, func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(delays)
	}
}

func statusOf(s *Sched, name string) CoroutineStatus {
	for _, st := range s.Status() {
		if st.Name == name {
			return st
		}
	}
	return CoroutineStatus{}
}

func waitState(t testing.TB, s *Sched, name string, want State) CoroutineStatus {
	t.Helper()
	testsync.WaitFor(t, fmt.Sprintf("%s %s", name, want), func() bool { return statusOf(s, name).State == want })
	return statusOf(s, name)
}

func TestPolicyDelay(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	p := Policy{Backoff: 10 * ms, MaxBackoff: 80 * ms}.withDefaults()
	for streak, want := range []time.Duration{10 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 80 * ms} {
		if got := p.delay(streak, nil); got != want {
			t.Errorf("delay(%d) = %v, want %v", streak, got, want)
		}
	}
	if got := p.delay(1000, nil); got != 80*ms {
		t.Errorf("delay(1000) = %v, want the cap", got)
	}
	p.Jitter = true
	lo := p.delay(3, func(int64) int64 { return 0 })
	hi := p.delay(3, func(n int64) int64 { return n - 1 })
	if lo != 20*ms || hi != 40*ms {
		t.Errorf("jittered delay of 40ms spans [%v, %v], want [20ms, 40ms]", lo, hi)
	}
	if d := (Policy{}).withDefaults(); d.Backoff != DefaultBackoff || d.MaxBackoff != DefaultMaxBackoff || d.Restart != RestartOnFailure || d.MaxRestarts != 0 {
		t.Errorf("zero policy defaults: %+v", d)
	}
}

func TestPolicyFromLocal(t *testing.T) {
	t.Parallel()
	at := func(pairs ...string) entrypoints.Local {
		var l entrypoints.Local
		for i := 0; i < len(pairs); i += 2 {
			l = l.With(pairs[i], pairs[i+1], entrypoints.Location{File: "dev.ini", Line: 10 + i, Section: "coroutine:tick"})
		}
		return l
	}
	for _, tc := range []struct {
		name  string
		local entrypoints.Local
		want  Policy
		err   string // substring of the error; "" for none
	}{
		{"empty", at(), Policy{}, ""},
		{"all", at("restart", "always", "backoff", "0.5", "max_backoff", "1m", "max_restarts", "5",
			"reset_after", "10m", "jitter", "yes", "required", "true"),
			Policy{Restart: RestartAlways, Backoff: 500 * time.Millisecond, MaxBackoff: time.Minute, MaxRestarts: 5,
				ResetAfter: 10 * time.Minute, Jitter: true, Required: true}, ""},
		{"never", at("restart", " Never "), Policy{Restart: RestartNever}, ""},
		{"on_failure", at("restart", "on_failure"), Policy{}, ""},
		{"bad restart", at("restart", "sometimes"), Policy{}, "dev.ini:10 [coroutine:tick] restart: unknown restart policy"},
		{"bad backoff", at("required", "no", "backoff", "soon"), Policy{}, "dev.ini:12 [coroutine:tick] backoff: bad duration"},
		{"negative backoff", at("backoff", "-1"), Policy{}, "backoff: must not be negative"},
		{"max below backoff", at("backoff", "2s", "max_backoff", "1s"), Policy{}, "max_backoff: 1s is less than backoff 2s"},
		{"bad max_restarts", at("max_restarts", "many"), Policy{}, "max_restarts: bad integer"},
		{"negative max_restarts", at("max_restarts", "-1"), Policy{}, "max_restarts: must not be negative"},
		{"bad required", at("required", "maybe"), Policy{}, "required: string is not true/false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := PolicyFromLocal(tc.local)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || p != tc.want {
				t.Fatalf("got %+v, %v; want %+v", p, err, tc.want)
			}
		})
	}
}

func TestPanicRestartedWithBackoff(t *testing.T) {
	t.Parallel()
	s, logs, delays := testSched(t)
	var runs atomic.Int32
	err := s.Add("crashy", func(ctx context.Context) error {
		if runs.Add(1) <= 3 {
			panic("boom")
		}
		<-ctx.Done()
		return nil
	}, Policy{Backoff: 10 * time.Millisecond, MaxBackoff: time.Second, MaxRestarts: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, s, "crashy", StateRunning)
	testsync.WaitFor(t, "4 runs", func() bool { return runs.Load() == 4 })
	st = statusOf(s, "crashy")
	if st.Restarts != 3 || !errors.Is(st.LastError, ErrPanic) || !strings.Contains(st.LastError.Error(), "boom") {
		t.Fatalf("status %+v; want 3 restarts and a panic error", st)
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}
	if got := delays(); !slices.Equal(got, want) {
		t.Fatalf("backoff delays %v, want %v", got, want)
	}
	if l := logs.String(); !strings.Contains(l, "coroutine panicked") || !strings.Contains(l, "sched_test.go") {
		t.Fatalf("the panic's stack was not logged:\n%s", l)
	}
}

func TestCrashLoopLimit(t *testing.T) {
	t.Parallel()
	s, _, delays := testSched(t)
	var runs atomic.Int32
	boom := errors.New("boom")
	s.Add("loop", func(ctx context.Context) error {
		runs.Add(1)
		return boom
	}, Policy{Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxRestarts: 3})
	s.Start(context.Background())
	if err := s.Wait(context.Background(), "loop"); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, want the last error", err)
	}
	st := statusOf(s, "loop")
	if st.State != StateFailed || st.Restarts != 3 || runs.Load() != 4 {
		t.Fatalf("status %+v after %d runs; want failed after 3 restarts, 4 runs", st, runs.Load())
	}
	if got := delays(); !slices.Equal(got, []time.Duration{time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond}) {
		t.Fatalf("delays %v", got)
	}
	// Waiting again returns the same final result at once.
	if err := s.Wait(context.Background(), "loop"); !errors.Is(err, boom) {
		t.Fatalf("second Wait = %v", err)
	}
}

// TestResetAfter: a run longer than ResetAfter ends the failure streak, so
// backoff and the crash-loop count start again.
func TestResetAfter(t *testing.T) {
	t.Parallel()
	s, _, delays := testSched(t)
	clock := &fakeClock{now: time.Unix(0, 0)}
	s.now = clock.Now
	var runs atomic.Int32
	s.Add("flaky", func(ctx context.Context) error {
		n := runs.Add(1)
		if n%2 == 0 {
			clock.Advance(time.Hour) // a long, healthy run
		}
		if n == 7 {
			<-ctx.Done()
			return nil
		}
		return fmt.Errorf("fail %d", n)
	}, Policy{Backoff: time.Millisecond, MaxBackoff: time.Second, MaxRestarts: 2, ResetAfter: time.Minute})
	s.Start(context.Background())
	testsync.WaitFor(t, "7 runs", func() bool { return runs.Load() == 7 })
	ms := time.Millisecond
	// Streaks: 1 | 2(reset)->1, 3->2 | 4(reset)->1, 5->2 | 6(reset)->1.
	want := []time.Duration{ms, ms, 2 * ms, ms, 2 * ms, ms}
	if got := delays(); !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	if st := statusOf(s, "flaky"); st.State != StateRunning || st.Restarts != 6 {
		t.Fatalf("status %+v; the crash-loop limit must not trip across healthy runs", st)
	}
}

func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	block := func(ctx context.Context) error { <-ctx.Done(); return nil }
	for _, tc := range []struct {
		name      string
		restart   RestartPolicy
		result    error
		third     func(ctx context.Context) error // the third run, if there is one
		wantState State
		wantRuns  int32
	}{
		{"never/error", RestartNever, boom, nil, StateFailed, 1},
		{"never/nil", RestartNever, nil, nil, StateStopped, 1},
		{"on-failure/nil", RestartOnFailure, nil, nil, StateStopped, 1},
		{"on-failure/error", RestartOnFailure, boom, func(context.Context) error { return boom }, StateFailed, 3},
		{"always/nil", RestartAlways, nil, block, StateRunning, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, _ := testSched(t)
			var runs atomic.Int32
			s.Add("co", func(ctx context.Context) error {
				if runs.Add(1) == 3 {
					return tc.third(ctx)
				}
				return tc.result
			}, Policy{Restart: tc.restart, MaxRestarts: 2})
			s.Start(context.Background())
			testsync.WaitFor(t, fmt.Sprintf("%d runs, then %v", tc.wantRuns, tc.wantState), func() bool {
				return runs.Load() == tc.wantRuns && statusOf(s, "co").State == tc.wantState
			})
			if st := statusOf(s, "co"); runs.Load() != tc.wantRuns || st.Restarts != int(tc.wantRuns)-1 {
				t.Fatalf("%v after %d runs, %d restarts; want %d runs", st.State, runs.Load(), st.Restarts, tc.wantRuns)
			}
		})
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	s, _, _ := testSched(t)
	release := make(chan struct{})
	s.Add("db", func(ctx context.Context) error {
		<-release
		if !Ready(ctx) {
			return errors.New("Ready found no coroutine")
		}
		Ready(ctx) // twice is harmless
		<-ctx.Done()
		return nil
	}, Policy{Required: true})
	s.Add("optional", func(ctx context.Context) error {
		<-ctx.Done() // never ready; does not gate
		return nil
	})
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}

	err := s.WaitReady(ctx, time.Millisecond)
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitReady before ready = %v, want ErrNotReady and ErrTimeout", err)
	}
	// db may still be starting under load: its state is named either way.
	if !regexp.MustCompile(`db \((starting|running)\)`).MatchString(err.Error()) || strings.Contains(err.Error(), "optional") {
		t.Fatalf("WaitReady error %q should name db only", err)
	}
	if !strings.Contains(err.Error(), "runner.Ready(ctx)") {
		t.Fatalf("WaitReady error %q should say that a required coroutine calls runner.Ready(ctx)", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.WaitReady(cctx, 0); !errors.Is(err, ErrNotReady) || !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitReady with a cancelled ctx = %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- s.WaitReady(ctx, 0) }()
	close(release)
	if err := testsync.Recv(t, "WaitReady", done); err != nil {
		t.Fatalf("WaitReady after Ready = %v", err)
	}
	if st := statusOf(s, "db"); st.State != StateReady || !st.Required {
		t.Fatalf("db status %+v, want ready and required", st)
	}
	if st := statusOf(s, "optional"); st.State != StateRunning {
		t.Fatalf("optional status %+v, want running", st)
	}
}

func TestReadinessFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("required coroutine fails", func(t *testing.T) {
		t.Parallel()
		s, _, _ := testSched(t)
		s.Add("db", func(ctx context.Context) error { return errors.New("no database") }, Policy{Required: true, Restart: RestartNever})
		s.Start(ctx)
		err := s.WaitReady(ctx, 0) // no timeout: must not hang
		if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "db (failed: no database)") {
			t.Fatalf("WaitReady = %v", err)
		}
	})
	t.Run("ready then finished", func(t *testing.T) {
		t.Parallel()
		s, _, _ := testSched(t)
		s.Add("migrate", func(ctx context.Context) error { Ready(ctx); return nil }, Policy{Required: true})
		s.Start(ctx)
		if err := s.WaitReady(ctx, 0); err != nil {
			t.Fatalf("WaitReady = %v", err)
		}
	})
	t.Run("finished without ready", func(t *testing.T) {
		t.Parallel()
		s, _, _ := testSched(t)
		s.Add("migrate", func(ctx context.Context) error { return nil }, Policy{Required: true})
		s.Start(ctx)
		if err := s.WaitReady(ctx, 0); !errors.Is(err, ErrNotReady) {
			t.Fatalf("WaitReady = %v", err)
		}
	})
	t.Run("readiness is per run", func(t *testing.T) {
		t.Parallel()
		s, _, _ := testSched(t)
		var runs atomic.Int32
		s.Add("co", func(ctx context.Context) error {
			if runs.Add(1) == 1 {
				Ready(ctx)
				return errors.New("crash after ready")
			}
			<-ctx.Done()
			return nil
		}, Policy{Required: true})
		s.Start(ctx)
		testsync.WaitFor(t, "second run", func() bool { return runs.Load() == 2 })
		if err := s.WaitReady(ctx, time.Millisecond); !errors.Is(err, ErrNotReady) {
			t.Fatalf("WaitReady = %v; the restarted run has not reported ready", err)
		}
	})
	t.Run("no required coroutines", func(t *testing.T) {
		t.Parallel()
		s, _, _ := testSched(t)
		if err := s.WaitReady(ctx, 0); err != nil {
			t.Fatal(err)
		}
	})
	if Ready(ctx) || CoroutineName(ctx) != "" {
		t.Fatal("Ready or CoroutineName outside a coroutine")
	}
}

func TestCoroutineContext(t *testing.T) {
	t.Parallel()
	s, _, _ := testSched(t)
	core := newTestCore(t, CoreOptions{})
	type seen struct {
		core Core
		name string
		log  string
	}
	got := make(chan seen, 2)
	co := func(ctx context.Context) error {
		got <- seen{CoreFrom(ctx), CoroutineName(ctx), hclog.FromContext(ctx).Name()}
		<-ctx.Done()
		return nil
	}
	s.Add("before", co)
	s.Start(WithCore(context.Background(), core))
	s.Add("after", co) // added after Start: starts at once
	for range 2 {
		g := testsync.Recv(t, "a coroutine", got)
		if g.core != Core(core) || (g.name != "before" && g.name != "after") || !strings.HasSuffix(g.log, "sched."+g.name) {
			t.Fatalf("coroutine saw %+v", g)
		}
	}
}

func TestSchedErrors(t *testing.T) {
	t.Parallel()
	s, _, _ := testSched(t)
	co := func(ctx context.Context) error { <-ctx.Done(); return nil }
	if err := s.Add("a", co); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("a", co); err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("duplicate Add = %v", err)
	}
	if err := s.Add("b", nil); err == nil {
		t.Error("Add(nil) succeeded")
	}
	if err := s.Wait(context.Background(), "nope"); err == nil {
		t.Error("Wait for an unknown coroutine succeeded")
	}
	if st := statusOf(s, "a"); st.State != StateStarting {
		t.Errorf("before Start: %v", st.State)
	}
	s.Start(context.Background())
	if err := s.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	if err := s.Stop(time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("c", co); !errors.Is(err, ErrStopped) {
		t.Errorf("Add after Stop = %v", err)
	}
	if st := statusOf(s, "a"); st.State != StateStopped {
		t.Errorf("after Stop: %v", st.State)
	}
	// Stop before Start.
	s2 := NewSched(hclog.NewNullLogger())
	s2.Add("x", co)
	if err := s2.Stop(0); err != nil || statusOf(s2, "x").State != StateStopped {
		t.Errorf("Stop before Start = %v, state %v", err, statusOf(s2, "x").State)
	}
	if err := s2.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop = %v", err)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	s, _, _ := testSched(t)
	var cleanedUp atomic.Int32
	polite := func(ctx context.Context) error {
		defer cleanedUp.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	release := make(chan struct{})
	s.Add("polite1", polite)
	s.Add("polite2", polite)
	s.Add("stuck", func(ctx context.Context) error {
		<-release // ignores ctx
		return nil
	})
	s.Add("backing-off", func(ctx context.Context) error { return errors.New("fail") },
		Policy{Backoff: time.Hour})
	s.sleep = sleepCtx // a real, hour-long backoff that Stop must cut
	s.Start(context.Background())
	waitState(t, s, "backing-off", StateBackoff)
	waitState(t, s, "polite1", StateRunning)
	waitState(t, s, "polite2", StateRunning)

	err := s.Stop(time.Millisecond)
	var se *StopError
	if !errors.As(err, &se) || !slices.Contains(se.Names, "stuck") || !errors.Is(err, ErrTimeout) {
		t.Fatalf("Stop = %v; want a StopError naming stuck", err)
	}
	for _, name := range []string{"polite1", "polite2", "backing-off"} {
		waitState(t, s, name, StateStopped)
	}
	if cleanedUp.Load() != 2 {
		t.Fatalf("%d deferred clean-ups ran, want 2", cleanedUp.Load())
	}
	if st := statusOf(s, "backing-off"); st.LastError == nil {
		t.Errorf("backing-off lost its last error: %+v", st)
	}
	err = s.Stop(time.Millisecond)
	if !errors.As(err, &se) || !slices.Equal(se.Names, []string{"stuck"}) {
		t.Fatalf("second Stop = %v; want only stuck named", err)
	}
	close(release)
	if err := s.Stop(time.Minute); err != nil {
		t.Fatalf("Stop after release = %v", err)
	}
}
