package plugins

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/internal/rawio"
	"github.com/paster-dev/paster/internal/testsync"
)

// TestProcsPolicy: a plugin goes to one P after procsCalm light ticks in a
// row (a busy tick starts the count again), and back to all Ps at the
// first tick that was busy on one P or made a goroutine wait long while
// the kernel did not preempt the process.
func TestProcsPolicy(t *testing.T) {
	t.Parallel()
	type tick struct {
		used      float64
		waits     uint64
		preempted bool
		one       bool
	}
	light := tick{used: 0.1}
	calm := func(ts ...tick) []tick {
		var out []tick
		for range procsCalm - 1 {
			out = append(out, light)
		}
		return append(out, ts...)
	}
	cases := []struct {
		name  string
		ticks []tick
	}{
		{"light goes to one P", calm(tick{used: 0.1, one: true}, tick{used: 0.3, one: true})},
		{"a busy tick restarts the count", append(calm(tick{used: 0.9}), calm(tick{used: 0.1, one: true})...)},
		{"between the thresholds stays on all", calm(tick{used: 0.5}, tick{used: 0.5}, tick{used: 0.1})},
		{"busy on one P goes back", calm(tick{used: 0.1, one: true}, tick{used: 0.6, one: true}, tick{used: 0.7})},
		{"a long wait goes back", calm(tick{used: 0.1, one: true}, tick{used: 0.1, waits: 1})},
		{"a long wait while preempted stays", calm(tick{used: 0.1, one: true}, tick{used: 0.3, waits: 2, preempted: true, one: true}, tick{used: 0.1, waits: 1})},
		{"busy while preempted goes back", calm(tick{used: 0.1, one: true}, tick{used: 0.8, waits: 1, preempted: true})},
		{"long waits on all Ps change nothing", append([]tick{{used: 0.1, waits: 3}}, calm(tick{used: 0.1, one: true})[1:]...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var p procsPolicy
			for i, tk := range c.ticks {
				// Requests keep the ticks at procsTick: the switching
				// alone is what this test follows.
				if got, _ := p.next(tk.used, tk.waits, tk.preempted, true); got != tk.one {
					t.Fatalf("tick %d (%.1f CPUs, %d long waits, preempted %v): one P %v, want %v", i, tk.used, tk.waits, tk.preempted, got, tk.one)
				}
			}
		})
	}
}

// TestProcsBackoff: on one P, each sample without a request, a long wait
// or more than procsIdle CPUs used doubles the wait before the next
// sample, up to procsTickMax; any sign of load (a request, CPU used, a
// long wait, running on all Ps) brings it back to procsTick at once.
func TestProcsBackoff(t *testing.T) {
	t.Parallel()
	type sample struct {
		used     float64
		waits    uint64
		requests bool
		wait     time.Duration // the wait the policy chooses after it
	}
	idle := func(waits ...time.Duration) []sample {
		var out []sample
		for _, w := range waits {
			out = append(out, sample{wait: w})
		}
		return out
	}
	tick, max := procsTick, procsTickMax
	ramp := []time.Duration{2 * tick}
	for ramp[len(ramp)-1] < max {
		ramp = append(ramp, min(2*ramp[len(ramp)-1], max))
	}
	cat := func(parts ...[]sample) []sample {
		var out []sample
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cases := []struct {
		name    string
		samples []sample
	}{
		{"idle on one P backs off to the bound and stays there", cat(idle(ramp...), idle(max, max, max))},
		{"a request brings it back", cat(idle(ramp...), []sample{{requests: true, wait: tick}}, idle(ramp...))},
		{"CPU used brings it back", cat(idle(ramp...), []sample{{used: 2 * procsIdle, wait: tick}}, idle(2*tick))},
		{"a long wait brings it back (and all Ps)", cat(idle(ramp...), []sample{{waits: 1, wait: tick}}, idle(tick, tick))},
		{"a trace of CPU is idle", cat(idle(2*tick), []sample{{used: procsIdle / 2, wait: 4 * tick}})},
		{"light but not idle keeps procsTick", []sample{{used: 0.2, wait: tick}, {used: 0.2, wait: tick}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var p procsPolicy
			for range procsCalm { // on one P, lightly used
				if one, wait := p.next(0.1, 0, false, true); wait != tick {
					t.Fatalf("light on all Ps: wait %v (one P %v), want %v", wait, one, tick)
				}
			}
			if !p.one {
				t.Fatal("not on one P after procsCalm light ticks")
			}
			for i, s := range c.samples {
				if _, got := p.next(s.used, s.waits, false, s.requests); got != s.wait {
					t.Fatalf("sample %d (%.2f CPUs, %d long waits, requests %v): wait %v, want %v", i, s.used, s.waits, s.requests, got, s.wait)
				}
			}
		})
	}
}

// TestBusyCount: a busy process gets its spare Ps more than its default
// when the default is all the CPUs it may run on, and no more when a CPU
// quota holds the default below them.
func TestBusyCount(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ def, cpus, spare, want int }{
		{2, 2, busySpare, 2 + busySpare},
		{8, 8, busySpare, 8 + busySpare},
		{2, 2, 0, 2},
		{2, 8, busySpare, 2},
		{7, 8, busySpare, 7},
	} {
		if got := busyCount(c.def, c.cpus, c.spare); got != c.want {
			t.Errorf("busyCount(%d, %d, %d) = %d, want %d", c.def, c.cpus, c.spare, got, c.want)
		}
	}
}

// TestLongWaits: the scheduling latencies the policy reads are there.
func TestLongWaits(t *testing.T) {
	t.Parallel()
	sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	longWaits(sample)
	if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		t.Fatalf("/sched/latencies:seconds is %v, not a histogram", sample[0].Value.Kind())
	}
	if _, ok := processUsage(); !ok {
		t.Fatal("no CPU time for this process")
	}
}

// TestHoldProcs: a light plugin process that holds the switching goes to
// one P, and busy, to its busy number (busyCount, with busySpare spare
// Ps); released by its last holder, it is back on the default number of
// Ps and the switching goroutine has ended. It runs in a child process,
// where no other test holds the switching, so that every check runs.
func TestHoldProcs(t *testing.T) {
	t.Parallel()
	if !inProcsChild(t) {
		return
	}
	def, base := runtime.GOMAXPROCS(0), runtime.NumGoroutine()
	procsSpare.Store(busySpare) // as Serve does
	release := holdProcs(hclog.NewNullLogger())
	testsync.WaitFor(t, "one P while light", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	// Busy: goroutines that compute without end use all the CPU one P
	// gives.
	var stop atomic.Bool
	var spinning sync.WaitGroup
	for range 2 {
		spinning.Go(func() {
			for n := 0; !stop.Load(); n++ {
			}
		})
	}
	busy := busyCount(def, runtime.NumCPU(), busySpare)
	testsync.WaitFor(t, "the busy number of Ps while busy", func() bool { return runtime.GOMAXPROCS(0) == busy })
	stop.Store(true)
	spinning.Wait()
	release()
	if n := runtime.GOMAXPROCS(0); n != def {
		t.Fatalf("GOMAXPROCS %d after the release, want the default %d", n, def)
	}
	testsync.WaitFor(t, "the switching goroutine to end", func() bool { return runtime.NumGoroutine() <= base })
}

// TestProcsIdle: an idle process that holds the switching samples at most
// once every procsTickMax once it has backed off (its switching goroutine
// wakes that rarely), and a request wakes it at once. In a child process,
// which is idle and where nothing else holds the switching.
func TestProcsIdle(t *testing.T) {
	t.Parallel()
	if !inProcsChild(t) {
		return
	}
	release := holdProcs(hclog.NewNullLogger())
	defer release()
	testsync.WaitFor(t, "one P while idle", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	testsync.WaitFor(t, "the wait to reach procsTickMax", func() bool { return procsStats.wait.Load() == int64(procsTickMax) })
	// Timers never fire early: waits of procsTickMax allow at most
	// window/procsTickMax+1 samples. Were a sample not idle (nothing here
	// uses CPU), one ramp back up adds at most len(ramp) more; at
	// procsTick there would be window/procsTick (80).
	const window = 2 * time.Second
	ramp := 0
	for w := procsTick; w < procsTickMax; w *= 2 {
		ramp++
	}
	start, n0 := time.Now(), procsStats.samples.Load()
	<-time.After(window)
	n, elapsed := procsStats.samples.Load()-n0, time.Since(start)
	if limit := uint64(elapsed/procsTickMax) + 1 + uint64(ramp); n > limit {
		t.Fatalf("%d samples in %v of idleness, want at most %d (one per %v)", n, elapsed, limit, procsTickMax)
	}
	t.Logf("%d samples in %v of idleness", n, elapsed)
	// A request while the goroutine waits procsTickMax wakes it. A request
	// that comes between a sample and the next wait is only heard (the
	// wait goes back to procsTick, then up again): try again then.
	testsync.WaitFor(t, "a request to wake the switching", func() bool {
		if procsStats.wait.Load() == int64(procsTickMax) {
			procsRequest()
		}
		return procsStats.woken.Load() > 0
	})
}

// envProcsChild names the test a child process of the test binary runs
// (inProcsChild).
const envProcsChild = "PASTER_TEST_PROCS_CHILD"

// inProcsChild reports whether this process is the child that runs t's
// checks. In the test process (where other tests start plugin processes,
// which hold the switching too) it runs t alone in a child process of the
// test binary instead, fails t if the child failed or did not run t, and
// skips t with the child's reason if the child skipped it.
func inProcsChild(t *testing.T) bool {
	t.Helper()
	if os.Getenv(envProcsChild) == t.Name() {
		if _, set := os.LookupEnv("GOMAXPROCS"); set || runtime.GOMAXPROCS(0) < 2 {
			t.Skip("GOMAXPROCS is set, or one P is the default")
		}
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), envProcsChild+"="+t.Name())
	out, err := cmd.CombinedOutput()
	switch {
	case bytes.Contains(out, []byte("--- SKIP: "+t.Name())):
		t.Skipf("the child skipped:\n%s", out)
	case err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())):
		t.Fatalf("the child process running %s: %v\n%s", t.Name(), err, out)
	}
	t.Logf("the child process:\n%s", out)
	return false
}

// While anything holds the switching, the process's HTTP server
// connections are read and written with raw system calls (rawio.Direct),
// and no longer once nothing does.
func TestHoldProcsDirectIO(t *testing.T) {
	t.Parallel()
	if !inProcsChild(t) {
		return
	}
	if rawio.Direct() {
		t.Fatal("direct before anything held the switching")
	}
	first, second := holdProcs(hclog.NewNullLogger()), holdProcs(hclog.NewNullLogger())
	if !rawio.Direct() {
		t.Fatal("not direct while held")
	}
	first()
	if !rawio.Direct() {
		t.Fatal("not direct while still held once")
	}
	second()
	if rawio.Direct() {
		t.Fatal("still direct once released")
	}
}
