package plugins

import (
	"os"
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/internal/testsync"
)

// TestProcsPolicy: a plugin goes to one P after procsCalm light ticks in a
// row (a busy tick starts the count again), and back to all Ps at the
// first tick that was busy on one P or made a goroutine wait long.
func TestProcsPolicy(t *testing.T) {
	t.Parallel()
	type tick struct {
		used  float64
		waits uint64
		one   bool
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
		{"long waits on all Ps change nothing", append([]tick{{used: 0.1, waits: 3}}, calm(tick{used: 0.1, one: true})[1:]...)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var p procsPolicy
			for i, tk := range c.ticks {
				if got := p.next(tk.used, tk.waits); got != tk.one {
					t.Fatalf("tick %d (%.1f CPUs, %d long waits): one P %v, want %v", i, tk.used, tk.waits, got, tk.one)
				}
			}
		})
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
	if _, ok := processCPU(); !ok {
		t.Fatal("no CPU time for this process")
	}
}

// TestHoldProcs: a light process that holds the switching goes to one P;
// released by its last holder, it is back on the default number of Ps and
// the switching goroutine has ended.
func TestHoldProcs(t *testing.T) {
	// Not parallel: sets the process's GOMAXPROCS, counts its goroutines.
	if _, set := os.LookupEnv("GOMAXPROCS"); set || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("GOMAXPROCS is set, or one P is the default")
	}
	procs.mu.Lock()
	held := procs.users > 0
	procs.mu.Unlock()
	if held {
		t.Skip("held by plugin processes of other tests")
	}
	def, base := runtime.GOMAXPROCS(0), runtime.NumGoroutine()
	release := holdProcs(hclog.NewNullLogger())
	testsync.WaitFor(t, "one P while light", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	release()
	procs.mu.Lock()
	held = procs.users > 0
	procs.mu.Unlock()
	if held {
		t.Skip("held meanwhile by a plugin process another test started")
	}
	if n := runtime.GOMAXPROCS(0); n != def {
		t.Fatalf("GOMAXPROCS %d after the release, want the default %d", n, def)
	}
	testsync.WaitFor(t, "the switching goroutine to end", func() bool { return runtime.NumGoroutine() <= base })
}
