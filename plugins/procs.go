package plugins

import (
	"os"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A plugin process runs its goroutines on one P (GOMAXPROCS 1) while it
// is light, and on the default number (runtime.SetDefaultGOMAXPROCS)
// while it is busy. On more than one P, every goroutine a light plugin
// readies (the data plane's reader handing an exchange to its goroutine)
// wakes a second thread that spins, finds nothing and sleeps again: two
// context switches and a futex pair per request, in a process that is
// mostly idle. Measured with bench/cmd/load on the hello plugin (2 CPUs,
// 16 connections, 8 rounds, other work on the machine): 1.17x the
// requests per second on one P; the CPU-bound bench plugin, which needs
// both CPUs, got 0.87x on one P, hence the switch back.
//
// The setting is the process's own: a GOMAXPROCS in the environment is
// left alone, and so is a plugin that sets it itself (after Serve has
// started, the next switch overrides it: set GOMAXPROCS in the
// environment instead).
const (
	// procsTick is short so that a plugin on one P that becomes busy gets
	// all Ps after a few ms; it goes back to one after half a second
	// (procsCalm ticks) of light use.
	procsTick = 25 * time.Millisecond
	// procsUp: CPUs used over a tick on one P from which the plugin gets
	// all of them; procsDown: CPUs used below which, for procsCalm ticks
	// in a row, it gets one.
	procsUp   = 0.7
	procsDown = 0.4
	procsCalm = 20
	// procsWait: a goroutine that waited this long to run on one P (a
	// handler computing for long keeps the others waiting) gets the
	// plugin all Ps at the next tick, however little CPU it used.
	procsWait = 2e-3
)

// procsPolicy decides, tick by tick, whether the plugin runs on one P.
type procsPolicy struct {
	one  bool
	calm int
}

// next takes the CPUs the process used over the last tick and how many
// goroutines waited procsWait or longer to run, and reports whether the
// plugin should run on one P from now on.
func (p *procsPolicy) next(used float64, waits uint64) bool {
	switch {
	case p.one && (used >= procsUp || waits > 0):
		p.one, p.calm = false, 0
	case !p.one && used < procsDown:
		p.calm++
		if p.calm >= procsCalm {
			p.one = true
		}
	case !p.one:
		p.calm = 0
	}
	return p.one
}

// adaptProcs starts switching between one P and the default, unless
// GOMAXPROCS is set in the environment, the default is one P already, or
// the process's CPU time cannot be read here.
func adaptProcs(log hclog.Logger) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set || runtime.GOMAXPROCS(0) < 2 {
		return
	}
	if _, ok := processCPU(); !ok {
		return
	}
	go func() {
		var p procsPolicy
		sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
		lastCPU, _ := processCPU()
		lastWaits := longWaits(sample)
		last := time.Now()
		t := time.NewTicker(procsTick)
		defer t.Stop()
		for now := range t.C {
			cpu, _ := processCPU()
			waits := longWaits(sample)
			used := float64(cpu-lastCPU) / float64(now.Sub(last))
			was := p.one
			switch one := p.next(used, waits-lastWaits); {
			case one && !was:
				runtime.GOMAXPROCS(1)
				log.Trace("light: running on one P", "cpus", used)
			case !one && was:
				runtime.SetDefaultGOMAXPROCS()
				log.Trace("busy: running on all Ps", "cpus", used, "long waits", waits-lastWaits, "procs", runtime.GOMAXPROCS(0))
			}
			lastCPU, lastWaits, last = cpu, waits, now
		}
	}()
}

// longWaits returns how many goroutines have waited procsWait or longer
// to run since the process started (sampled by the runtime).
func longWaits(sample []metrics.Sample) uint64 {
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := sample[0].Value.Float64Histogram()
	var n uint64
	for i, c := range h.Counts {
		if h.Buckets[i] >= procsWait {
			n += c
		}
	}
	return n
}
