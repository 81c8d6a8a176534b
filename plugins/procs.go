package plugins

import (
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/internal/rawio"
)

// A plugin process, and a host while it runs plugin processes, run their
// goroutines on one P (GOMAXPROCS 1) while they are light, and on the
// default number while they are busy, a plugin process on busySpare more
// (busyProcs). On
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
// An idle process on one P samples less and less often: each sample
// without a request, a long scheduling wait or more than procsIdle CPUs
// used doubles the wait before the next, up to procsTickMax, and any load
// brings it back to procsTick. Ticking every procsTick, an idle host and
// each of its plugin processes woke ~150 times a second (the tick, and
// the threads it wakes) for nothing. Requests are where the load of a
// host and its plugins comes from, and the one sign of it that costs
// nothing to watch (the runtime tells of no goroutine becoming runnable
// or CPU use rising without being polled): the first request after a
// long wait wakes the sampling (procsRequest; one atomic load per request
// otherwise), which measures from then on every procsTick, so a plugin
// that a burst of requests makes busy gets all Ps as quickly as before.
// Measured (bench/cmd/benchserve -target paster-plugin, idle, voluntary
// context switches of all threads over 10 s, three runs): the host
// 1591, 1581, 1642 before, 272, 264, 246 after; the hello plugin 1440,
// 1531, 1531 before, 280, 261, 290 after (253-256 with the switching
// off: watchParent's ticker was most of the rest, until it waited on a
// pidfd instead: see watchParent).
//
// The setting is the process's own: a GOMAXPROCS in the environment is
// left alone; a program that sets it itself is overridden at the next
// switch (set GOMAXPROCS in the environment instead).
const (
	// procsTick is short so that a plugin on one P that becomes busy gets
	// its busy Ps (busyProcs) after a few ms; it goes back to one after
	// half a second (procsCalm ticks) of light use.
	procsTick = 25 * time.Millisecond
	// procsUp: CPUs used over a tick on one P from which the plugin is
	// busy; procsDown: CPUs used below which, for procsCalm ticks
	// in a row, it gets one.
	procsUp   = 0.7
	procsDown = 0.4
	procsCalm = 20
	// procsWait: a goroutine that waited this long to run on one P (a
	// handler computing for long keeps the others waiting) makes the
	// process busy at the next tick, however little CPU it used, unless
	// the kernel preempted the process's threads meanwhile: then the
	// wait may be the kernel's, which more Ps do not cut (a host that
	// hands requests to busy plugin processes on a machine they keep
	// busy: its thread waits for a CPU, not its goroutines for the P).
	// Counting those waits put such a host on all Ps, where every hand-off
	// wakes a second thread, and kept it there (busy, it used more than
	// procsDown); per request under bench/run.sh cpu's load (the 200 µs
	// handler in its plugin, 5 s of it, /proc), the host used 67, 43 and
	// 44 µs of CPU counting them (67: on all Ps), 45, 44 and 40 µs on one
	// P throughout. What it costs: a light process on a machine others
	// keep busy leaves the goroutines waiting behind a long computation
	// on its one P until it uses procsUp of a CPU, or the computation
	// yields (the runtime preempts a goroutine after 10 ms).
	procsWait = 2e-3
	// procsIdle: CPUs used below which a sample on one P without a
	// request or a long wait is idle; each idle sample doubles the wait
	// before the next, up to procsTickMax. A request wakes the sampling
	// at once; load that comes without one (a plugin's own server or
	// background work, the host's compiled-in apps) is seen at the next
	// sample, so such a process, busy all of a sudden, stays on one P
	// for up to procsTickMax (plus a procsTick to measure it, unless it
	// kept a goroutine waiting procsWait). 400 ms: 2.5 samples a second,
	// a sixteenth of procsTick's, as few as an idle plugin's other
	// wake-ups were (watchParent's 5 a second, before its pidfd).
	procsIdle    = 0.05
	procsTickMax = 400 * time.Millisecond
	// procsWakeTick: the first sample after a request woke the switching
	// comes this soon, so that a burst after a long idle spell that needs
	// all Ps gets them within a few ms rather than procsTick.
	procsWakeTick = 5 * time.Millisecond
)

// procsPolicy decides, sample by sample, whether the plugin runs on one P
// and how long to wait before the next sample.
type procsPolicy struct {
	one  bool
	calm int
	wait time.Duration
}

// usage is what the process has used since it started (processUsage).
type usage struct {
	cpu         time.Duration
	preemptions uint64
}

// next takes the CPUs the process used since the last sample, how many
// goroutines waited procsWait or longer to run meanwhile, whether the
// kernel preempted the process's threads meanwhile and whether a request
// came, and reports whether the plugin should run on one P from now on
// and how long to wait before the next sample: procsTick, doubled by
// every idle sample on one P up to procsTickMax. Long waits count only
// while the kernel did not preempt the process (procsWait).
func (p *procsPolicy) next(used float64, waits uint64, preempted, requests bool) (one bool, wait time.Duration) {
	if preempted {
		waits = 0
	}
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
	if p.one && !requests && waits == 0 && used < procsIdle {
		p.wait = min(2*max(p.wait, procsTick), procsTickMax)
	} else {
		p.wait = procsTick
	}
	return p.one, p.wait
}

// procsReqs is what requests tell the switching goroutine (procsRequest);
// reqsHeard also while nothing holds the switching, so that a request
// then costs one atomic load.
var procsReqs atomic.Int32

const (
	reqsHeard  = iota // a request came since the last sample
	reqsNone          // none yet
	reqsAsleep        // none yet, and the wait is longer than procsTick: the next one wakes the goroutine (procsWake)
)

// procsWake is how procsRequest wakes the switching goroutine from a long
// wait.
var procsWake = make(chan struct{}, 1)

// procsStats counts the switching goroutine's samples and those a request
// woke it for, and holds the last wait it chose, for tests.
var procsStats struct {
	samples, woken atomic.Uint64
	wait           atomic.Int64
}

// procsRequest tells the switching that a request came: the goroutine
// keeps sampling every procsTick, and if it was waiting longer, it wakes
// to measure from now. While requests keep coming (or nothing holds the
// switching), it costs one atomic load.
func procsRequest() {
	if s := procsReqs.Load(); s != reqsHeard && procsReqs.CompareAndSwap(s, reqsHeard) && s == reqsAsleep {
		select {
		case procsWake <- struct{}{}:
		default:
		}
	}
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
// does not switch when GOMAXPROCS is set in the environment, the default
// is one P already, or the process's CPU time cannot be read here.
//
// While held, the process's HTTP server connections are also read and
// written with raw system calls (rawio.SetDirect): a host of plugin
// processes, like a plugin, hands most of its requests on and sleeps
// between them, and through net.Conn each read or write after a sleep
// wakes the runtime's sysmon (package rawio says why, and why a process
// that serves its requests itself keeps net.Conn's path). bench/run.sh cpu
// (the host light, a CPU-bound plugin), same-run alternation: the host
// used 38 µs of CPU per request against 51, and the plugin ÷ in-process
// ratio rose from 0.858 and 0.859 to 0.875 and 0.878.
func holdProcs(log hclog.Logger) (release func()) {
	switching := true
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		switching = false
	}
	if _, ok := processUsage(); !ok {
		switching = false
	}
	procs.mu.Lock()
	defer procs.mu.Unlock()
	procs.users++
	if procs.users == 1 {
		rawio.SetDirect(true)
		if switching {
			procs.stop, procs.done = make(chan struct{}), make(chan struct{})
			go adaptProcs(log, procs.stop, procs.done)
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			procs.mu.Lock()
			defer procs.mu.Unlock()
			procs.users--
			if procs.users == 0 {
				rawio.SetDirect(false)
				if procs.stop != nil {
					close(procs.stop)
					<-procs.done
					procs.stop, procs.done = nil, nil
				}
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
	busyProcs()
	defer runtime.SetDefaultGOMAXPROCS()
	defer procsReqs.Store(reqsHeard)
	sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	lastUse, _ := processUsage()
	lastWaits := longWaits(sample)
	last := time.Now()
	procsReqs.Store(reqsNone)
	timer := time.NewTimer(procsTick)
	defer timer.Stop()
	for {
		var now time.Time
		select {
		case <-stop:
			return
		case <-procsWake:
			// A request came during a long wait: measure from now, and
			// sample after procsWakeTick (a sample now would measure
			// nothing but the long wait, or a moment).
			procsStats.woken.Add(1)
			lastUse, _ = processUsage()
			last = time.Now()
			procsStats.wait.Store(int64(procsWakeTick))
			timer.Reset(procsWakeTick)
			continue
		case now = <-timer.C:
		}
		procsStats.samples.Add(1)
		requests := procsReqs.Swap(reqsNone) == reqsHeard
		use, _ := processUsage()
		waits := longWaits(sample)
		used := float64(use.cpu-lastUse.cpu) / float64(now.Sub(last))
		was := p.one
		one, next := p.next(used, waits-lastWaits, use.preemptions != lastUse.preemptions, requests)
		switch {
		case one && !was:
			runtime.GOMAXPROCS(1)
			log.Trace("light: running on one P", "cpus", used)
		case !one && was:
			log.Trace("busy: running on all Ps", "cpus", used, "long waits", waits-lastWaits, "procs", busyProcs())
		}
		select { // a wake-up that raced with the timer: this sample is it
		case <-procsWake:
		default:
		}
		if next > procsTick && !procsReqs.CompareAndSwap(reqsNone, reqsAsleep) {
			next = procsTick // a request came just now
		}
		procsStats.wait.Store(int64(next))
		timer.Reset(next)
		lastUse, lastWaits, last = use, waits, now
	}
}

// busySpare is how many Ps more than it has CPUs a busy plugin process
// runs on. A busy plugin process shares the CPUs with its host's threads
// and with the clients', which wake at every request handed on and
// preempt its threads. On a P per CPU, perf sched under bench/run.sh cpu's
// load showed a plugin thread woken by the host's write (the data plane's
// reader was ready) find every P taken, by threads queued behind the
// other CPU's running one (the kernel left them there for up to 2 ms
// rather than move them to the idle CPU), hand the reader to the run
// queue and sleep, its CPU idle meanwhile; spare Ps let such a thread run
// what it woke for. Two: one for the other side's thread and one for the
// clients'. Measured under that load (the 200 µs handler in its plugin, 2
// CPUs, 16 connections), same-run alternation of the app in-process and
// the plugin on two busy settings:
//
//   - none against one spare: plugin ÷ in-process 0.832 and 0.880 against
//     0.880 and 0.906; per request from /proc (two runs each) the plugin
//     used as much CPU either way (221-224 µs), the host 41-46 µs against
//     43-52 and the load generator 23-25 µs against 29-31, each woken
//     fewer times per request (0.92-0.95 against 1.15-1.17 for the load
//     generator);
//   - one against two, nine runs: 0.885, 0.896, 0.871, 0.915, 0.907,
//     0.896, 0.899, 0.922, 0.913 (mean 0.900) against 0.897, 0.911,
//     0.874, 0.916, 0.923, 0.924, 0.938, 0.930, 0.933 (mean 0.916); the
//     hello plugin ÷ paster-http, five runs, 0.473 against 0.470 on
//     average (bench/run.sh hello's load);
//   - two against three: 0.889, 0.898, 0.898 against 0.907, 0.892, 0.903.
//
// A host of plugins gets none (procsSpare): busy, it serves its clients'
// HTTP in short goroutines, and spare Ps only wake more of its threads.
// Under bench/run.sh hello's load (the host busy, the hello plugin light),
// same-run alternation, five runs: plugin ÷ paster-http 0.455, 0.470,
// 0.465, 0.445, 0.466 with the host's spares against 0.475, 0.513, 0.487,
// 0.454, 0.469 without; /cpu (the host light) 0.899 and 0.908 against
// 0.888 and 0.930.
const busySpare = 2

// procsSpare is how many spare Ps the process gets while busy: busySpare
// in a plugin process (Serve sets it before it holds the switching), none
// in a host.
var procsSpare atomic.Int32

// busyProcs puts the process on its busy number of Ps (busyCount of the
// default, runtime.SetDefaultGOMAXPROCS, read again each time) and
// returns that number.
func busyProcs() int {
	runtime.SetDefaultGOMAXPROCS()
	n := busyCount(runtime.GOMAXPROCS(0), runtime.NumCPU(), int(procsSpare.Load()))
	runtime.GOMAXPROCS(n)
	return n
}

// busyCount is the number of Ps of a busy process whose default is def
// on a machine where it may run on cpus CPUs: spare more than def, unless
// def is below cpus. Then a CPU quota (cgroup) holds the default down, and
// spare Ps would not wait for a CPU but run at once on the others, using
// up the quota, which then stops the whole process for the rest of its
// period (why Go's default follows the quota).
func busyCount(def, cpus, spare int) int {
	if def < cpus {
		return def
	}
	return def + spare
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
