package plugins

import (
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A plugin process, and a host while it runs plugin processes, run their
// goroutines on one P (GOMAXPROCS 1) while they are light, and on the
// default number (runtime.SetDefaultGOMAXPROCS) while they are busy. On
// more than one P, every goroutine a light process readies (the data
// plane's reader handing an exchange on) wakes a second thread that spins,
// finds nothing and sleeps again: two context switches and a futex pair
// per request, in a process that is mostly idle. Measured with
// bench/cmd/load (2 CPUs, 16 connections, 8-12 rounds, other work on the
// machine): the hello plugin on one P served 1.17x the requests per second;
// the CPU-bound bench plugin, which needs both CPUs, 0.87x (hence the
// switch back); with the host switching too, the bench plugin's /cpu went
// from 0.79 and 0.78x the in-process app to 0.83 and 0.85x (perf: the host,
// light there, spent 30% of its CPU in the scheduler and futex).
//
// The setting is the process's own: a GOMAXPROCS in the environment is
// left alone; a program that sets it itself is overridden at the next
// switch (set GOMAXPROCS in the environment instead).
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

var procs struct {
	mu    sync.Mutex
	users int
	stop  chan struct{}
	done  chan struct{}
}

// holdProcs switches the process between one P and the default while it is
// held by anyone: a plugin process for its life (Serve), the host while it
// runs plugin processes, whose requests it mostly hands on. Release stops
// the switching when nothing holds it any more, back on the default. It
// does nothing when GOMAXPROCS is set in the environment, the default is
// one P already, or the process's CPU time cannot be read here.
func holdProcs(log hclog.Logger) (release func()) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return func() {}
	}
	if _, ok := processCPU(); !ok {
		return func() {}
	}
	procs.mu.Lock()
	defer procs.mu.Unlock()
	procs.users++
	if procs.users == 1 {
		procs.stop, procs.done = make(chan struct{}), make(chan struct{})
		go adaptProcs(log, procs.stop, procs.done)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			procs.mu.Lock()
			defer procs.mu.Unlock()
			procs.users--
			if procs.users == 0 {
				close(procs.stop)
				<-procs.done
			}
		})
	}
}

// adaptProcs switches until stop is closed, then closes done.
func adaptProcs(log hclog.Logger, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if runtime.GOMAXPROCS(0) < 2 {
		return
	}
	var p procsPolicy
	defer func() {
		if p.one {
			runtime.SetDefaultGOMAXPROCS()
		}
	}()
	sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	lastCPU, _ := processCPU()
	lastWaits := longWaits(sample)
	last := time.Now()
	t := time.NewTicker(procsTick)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-stop:
			return
		case now = <-t.C:
		}
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
