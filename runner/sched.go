package runner

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// Errors of the scheduler, for errors.Is.
var (
	// ErrPanic is wrapped by the error of a coroutine run that panicked.
	ErrPanic = errors.New("coroutine panicked")
	// ErrNotReady is wrapped by WaitReady's error.
	ErrNotReady = errors.New("coroutines not ready")
	// ErrStopped: the scheduler was stopped; nothing can be added or started.
	ErrStopped = errors.New("scheduler stopped")
)

// RestartPolicy says when the scheduler runs a coroutine again after a run
// ends. A coroutine whose context was cancelled (the scheduler is stopping)
// is never restarted.
type RestartPolicy int

const (
	// RestartOnFailure restarts after an error or a panic; a nil return
	// ends the coroutine (state stopped). The zero value.
	RestartOnFailure RestartPolicy = iota
	// RestartAlways restarts after any return, nil included.
	RestartAlways
	// RestartNever runs once; an error leaves the coroutine failed.
	RestartNever
)

// String returns the INI spelling: on-failure, always or never.
func (r RestartPolicy) String() string {
	switch r {
	case RestartAlways:
		return "always"
	case RestartNever:
		return "never"
	}
	return "on-failure"
}

// ParseRestartPolicy parses "always", "on-failure" (or "on_failure") and
// "never", ignoring case and surrounding space.
func ParseRestartPolicy(s string) (RestartPolicy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on-failure", "on_failure", "onfailure":
		return RestartOnFailure, nil
	case "always":
		return RestartAlways, nil
	case "never", "no":
		return RestartNever, nil
	}
	return 0, fmt.Errorf("unknown restart policy %q (want always, on-failure or never)", s)
}

// Policy defaults, used where a Policy field is zero.
const (
	DefaultBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultResetAfter = time.Minute
)

// Policy says how the scheduler supervises a coroutine. The zero value is
// the default policy: restart on failure, backoff from 100ms doubling up to
// 30s, no restart limit, not required for readiness.
type Policy struct {
	Restart RestartPolicy

	// Backoff is the delay before the first restart after a failure; each
	// consecutive failure doubles it, up to MaxBackoff. A restart after a
	// nil return (RestartAlways) waits Backoff. Zero means DefaultBackoff,
	// zero MaxBackoff DefaultMaxBackoff.
	Backoff, MaxBackoff time.Duration

	// Jitter randomises each delay between half and all of it, so that
	// coroutines failing together do not restart in lockstep.
	Jitter bool

	// MaxRestarts is the crash-loop limit: after this many consecutive
	// failed runs were restarted, one more failure leaves the coroutine in
	// state failed for good. Zero means no limit.
	MaxRestarts int

	// ResetAfter: a run that lasted at least this long was healthy, so a
	// failure after it starts a new streak (backoff and MaxRestarts count
	// from the beginning again). Zero means DefaultResetAfter.
	ResetAfter time.Duration

	// Required makes the coroutine gate readiness: WaitReady waits for it
	// to call Ready. A coroutine that is not required never gates, whether
	// or not it calls Ready.
	Required bool
}

func (p Policy) withDefaults() Policy {
	if p.Backoff <= 0 {
		p.Backoff = DefaultBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = max(DefaultMaxBackoff, p.Backoff)
	}
	if p.MaxBackoff < p.Backoff {
		p.MaxBackoff = p.Backoff
	}
	if p.ResetAfter <= 0 {
		p.ResetAfter = DefaultResetAfter
	}
	if p.MaxRestarts < 0 {
		p.MaxRestarts = 0
	}
	return p
}

// delay returns the backoff before the restart that follows the streak-th
// consecutive failure (streak 0: after a nil return). rnd returns a number
// in [0, n).
func (p Policy) delay(streak int, rnd func(n int64) int64) time.Duration {
	d := p.Backoff
	for i := 1; i < streak && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	if p.Jitter && d > 1 {
		d = d/2 + time.Duration(rnd(int64(d/2)+1))
	}
	return d
}

// PolicyKeys are the local configuration keys PolicyFromLocal reads.
var PolicyKeys = []string{"restart", "backoff", "max_backoff", "max_restarts", "reset_after", "jitter", "required"}

// PolicyFromLocal reads a coroutine's supervision policy from its section:
//
//	restart       always | on-failure | never (default on-failure)
//	backoff       first restart delay (seconds or a Go duration; default 100ms)
//	max_backoff   longest restart delay (default 30s)
//	jitter        randomise delays (boolean, default false)
//	max_restarts  crash-loop limit, consecutive failures (default 0 = no limit)
//	reset_after   a run this long ends a failure streak (default 1m)
//	required      serving waits for it to report ready (boolean, default false)
//
// Keys not set keep the zero Policy's defaults. A bad value is an error
// naming the file, line, section and key.
func PolicyFromLocal(local entrypoints.Local) (Policy, error) {
	var p Policy
	var err error
	if v, ok := local.Lookup("restart"); ok {
		if p.Restart, err = ParseRestartPolicy(v); err != nil {
			return Policy{}, local.Errorf("restart", "%w", err)
		}
	}
	durations := []struct {
		key string
		dst *time.Duration
	}{{"backoff", &p.Backoff}, {"max_backoff", &p.MaxBackoff}, {"reset_after", &p.ResetAfter}}
	for _, d := range durations {
		if *d.dst, err = local.Duration(d.key, 0); err != nil {
			return Policy{}, err
		}
		if *d.dst < 0 {
			return Policy{}, local.Errorf(d.key, "must not be negative: %v", *d.dst)
		}
	}
	if p.MaxBackoff > 0 && p.MaxBackoff < p.withDefaults().Backoff {
		return Policy{}, local.Errorf("max_backoff", "%v is less than backoff %v", p.MaxBackoff, p.withDefaults().Backoff)
	}
	if p.MaxRestarts, err = local.Int("max_restarts", 0); err != nil {
		return Policy{}, err
	}
	if p.MaxRestarts < 0 {
		return Policy{}, local.Errorf("max_restarts", "must not be negative (0 means no limit): %d", p.MaxRestarts)
	}
	if p.Jitter, err = local.Bool("jitter", false); err != nil {
		return Policy{}, err
	}
	if p.Required, err = local.Bool("required", false); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// State is where a supervised coroutine is in its life.
type State int

const (
	StateStarting State = iota // added; the scheduler has not started it yet
	StateRunning               // running, not (or not yet) reported ready in this run
	StateReady                 // running and reported ready in this run
	StateBackoff               // waiting to be restarted
	StateStopped               // ended: returned nil, or stopped with the scheduler
	StateFailed                // ended with an error and will not be restarted
)

// String returns the state's name: starting, running, ready, backoff,
// stopped or failed.
func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateReady:
		return "ready"
	case StateBackoff:
		return "backoff"
	case StateStopped:
		return "stopped"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// CoroutineStatus is one coroutine's status, as Sched.Status reports it.
type CoroutineStatus struct {
	Name      string
	State     State
	Required  bool
	Restarts  int       // how many times it was restarted, in all
	LastError error     // the error of the last run that failed, or nil
	Since     time.Time // when it entered State
}

// Sched supervises coroutines: it runs each on its own goroutine, restarts
// it by its Policy, tracks readiness and status, and stops them all. A
// coroutine's context carries what Start's context carries (the Runner puts
// the Core there, so CoreFrom works in a coroutine), a logger named after it
// (hclog.FromContext), and its identity for Ready. Make one with NewSched;
// it is safe for concurrent use.
type Sched struct {
	log hclog.Logger

	// Replaceable by tests in this package.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
	rnd   func(n int64) int64

	mu      sync.Mutex
	tasks   []*task
	byName  map[string]*task
	ctx     context.Context // nil until Start
	cancel  context.CancelFunc
	stopped bool
	changed chan struct{} // closed and replaced on every state change
}

type task struct {
	name   string
	co     entrypoints.Coroutine
	policy Policy // with defaults
	log    hclog.Logger

	// Guarded by Sched.mu.
	state    State
	ready    bool // reported ready in the current (or last) run
	run      int  // the run's number, for Ready
	restarts int
	lastErr  error
	since    time.Time
	done     chan struct{} // closed when its goroutine ends; nil before Start
}

// NewSched returns a scheduler that logs to logger named "sched" (hclog's
// default logger when nil).
func NewSched(logger hclog.Logger) *Sched {
	if logger == nil {
		logger = hclog.Default()
	}
	return &Sched{
		log:     logger.Named("sched"),
		now:     time.Now,
		sleep:   sleepCtx,
		rnd:     rand.Int64N,
		byName:  make(map[string]*task),
		changed: make(chan struct{}),
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Add adds a coroutine under name with policy (the zero Policy when
// omitted; only the first policy given is used). Before Start it waits in
// state starting; after Start it starts at once. It is an error to add a
// name twice, a nil coroutine, or anything after Stop (ErrStopped).
func (s *Sched) Add(name string, co entrypoints.Coroutine, policy ...Policy) error {
	if co == nil {
		return fmt.Errorf("runner: add coroutine %q: nil coroutine", name)
	}
	var p Policy
	if len(policy) > 0 {
		p = policy[0]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("runner: add coroutine %q: %w", name, ErrStopped)
	}
	if _, dup := s.byName[name]; dup {
		return fmt.Errorf("runner: add coroutine %q: a coroutine of that name was already added", name)
	}
	t := &task{name: name, co: co, policy: p.withDefaults(), log: s.log.Named(name), since: s.now()}
	s.tasks = append(s.tasks, t)
	s.byName[name] = t
	if s.ctx != nil {
		s.launchLocked(t)
	}
	s.notifyLocked()
	return nil
}

// Start starts every coroutine added so far; later ones start as they are
// added. Coroutines' contexts derive from ctx, so they carry its values and
// end when it ends; Stop ends them too. Start fails if called twice or after
// Stop.
func (s *Sched) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("runner: start scheduler: %w", ErrStopped)
	}
	if s.ctx != nil {
		return errors.New("runner: start scheduler: already started")
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	for _, t := range s.tasks {
		s.launchLocked(t)
	}
	s.log.Debug("started", "coroutines", len(s.tasks))
	return nil
}

func (s *Sched) launchLocked(t *task) {
	t.done = make(chan struct{})
	go s.supervise(s.ctx, t)
}

// notifyLocked wakes everyone waiting for a state change.
func (s *Sched) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Sched) setStateLocked(t *task, st State) {
	t.state = st
	t.since = s.now()
	s.notifyLocked()
}

// supervise runs t until its policy says stop or ctx ends.
func (s *Sched) supervise(ctx context.Context, t *task) {
	defer close(t.done)
	p := t.policy
	streak := 0
	for {
		s.mu.Lock()
		t.run++
		run := t.run
		t.ready = false
		s.setStateLocked(t, StateRunning)
		s.mu.Unlock()

		started := s.now()
		err := s.runOnce(ctx, t, run)
		ran := s.now().Sub(started)

		if ctx.Err() != nil {
			s.mu.Lock()
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ctx.Err()) {
				t.lastErr = err
				t.log.Warn("coroutine failed while stopping", "error", err)
			}
			s.setStateLocked(t, StateStopped)
			s.mu.Unlock()
			return
		}

		restart := p.Restart == RestartAlways || (p.Restart == RestartOnFailure && err != nil)
		if err != nil {
			if ran >= p.ResetAfter {
				streak = 0
			}
			streak++
			if restart && p.MaxRestarts > 0 && streak > p.MaxRestarts {
				t.log.Error("coroutine failed; crash-loop limit reached, not restarting",
					"error", err, "consecutive_failures", streak, "max_restarts", p.MaxRestarts)
				restart = false
			} else if restart {
				t.log.Error("coroutine failed; restarting", "error", err, "consecutive_failures", streak)
			} else {
				t.log.Error("coroutine failed", "error", err)
			}
		} else {
			streak = 0
		}

		s.mu.Lock()
		if err != nil {
			t.lastErr = err
		}
		if !restart {
			if err != nil {
				s.setStateLocked(t, StateFailed)
			} else {
				t.log.Debug("coroutine finished")
				s.setStateLocked(t, StateStopped)
			}
			s.mu.Unlock()
			return
		}
		s.setStateLocked(t, StateBackoff)
		s.mu.Unlock()

		if err := s.sleep(ctx, p.delay(streak, s.rnd)); err != nil {
			s.mu.Lock()
			s.setStateLocked(t, StateStopped)
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		t.restarts++
		s.mu.Unlock()
	}
}

// runOnce runs t's coroutine once, turning a panic into an error.
func (s *Sched) runOnce(ctx context.Context, t *task, run int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, r)
			t.log.Error("coroutine panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	ctx = WithReadyFunc(ctx, func() { s.markReady(t, run) })
	ctx = hclog.WithContext(ctx, t.log)
	ctx = context.WithValue(ctx, coroutineNameKey{}, t.name)
	return t.co(ctx)
}

func (s *Sched) markReady(t *task, run int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.run != run || t.ready {
		return
	}
	t.ready = true
	if t.state == StateRunning {
		t.log.Debug("coroutine ready")
		s.setStateLocked(t, StateReady)
	}
}

type readyKey struct{}
type coroutineNameKey struct{}

// WithReadyFunc returns a copy of ctx in which Ready calls ready. The
// scheduler gives each coroutine run such a context; a plugin SDK uses it to
// forward a plugin coroutine's Ready to the host.
func WithReadyFunc(ctx context.Context, ready func()) context.Context {
	return context.WithValue(ctx, readyKey{}, ready)
}

// Ready reports, from a coroutine, that it is ready: its state becomes
// ready, which WaitReady waits for when its policy is Required. Readiness
// holds for the current run; a restarted coroutine reports it again. Ready
// returns false, doing nothing, when ctx is not a supervised coroutine's.
// Calling it more than once is harmless.
func Ready(ctx context.Context) bool {
	f, ok := ctx.Value(readyKey{}).(func())
	if ok && f != nil {
		f()
	}
	return ok && f != nil
}

// CoroutineName returns the name a coroutine was added under, from its
// context, or "" outside a supervised coroutine.
func CoroutineName(ctx context.Context) string {
	name, _ := ctx.Value(coroutineNameKey{}).(string)
	return name
}

// readyHint ends WaitReady's errors: the usual cause of a required coroutine
// that never gets ready is one that never says so.
const readyHint = " (a required coroutine must call runner.Ready(ctx) once it is ready)"

// WaitReady waits until every required coroutine has reported ready (or
// ended cleanly after doing so). It returns nil at once when no coroutine is
// required. It fails, with an error wrapping ErrNotReady that names each
// coroutine not ready and its state and last error, as soon as a required
// coroutine ends without having been ready (failed or stopped), or when
// timeout passes (the error wraps ErrTimeout too) or ctx ends. timeout <= 0
// means no timeout but ctx's.
func (s *Sched) WaitReady(ctx context.Context, timeout time.Duration) error {
	dl := newDeadline(timeout)
	defer dl.stop()
	for {
		s.mu.Lock()
		var waiting, dead []string
		for _, t := range s.tasks {
			if !t.policy.Required || t.ready {
				continue
			}
			desc := fmt.Sprintf("%s (%s", t.name, t.state)
			if t.lastErr != nil {
				desc += fmt.Sprintf(": %v", t.lastErr)
			}
			desc += ")"
			if t.state == StateFailed || t.state == StateStopped {
				dead = append(dead, desc)
			} else {
				waiting = append(waiting, desc)
			}
		}
		changed := s.changed
		s.mu.Unlock()

		if len(dead) > 0 {
			return fmt.Errorf("runner: %w: ended without reporting ready: %s%s", ErrNotReady, strings.Join(append(dead, waiting...), ", "), readyHint)
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-dl.C:
			return fmt.Errorf("runner: %w: %w: %s%s", ErrNotReady, dl.err(), strings.Join(waiting, ", "), readyHint)
		case <-ctx.Done():
			return fmt.Errorf("runner: %w: %w: %s", ErrNotReady, ctxErr(ctx), strings.Join(waiting, ", "))
		}
	}
}

// Status returns every coroutine's status, in the order they were added.
func (s *Sched) Status() []CoroutineStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CoroutineStatus, len(s.tasks))
	for i, t := range s.tasks {
		out[i] = CoroutineStatus{
			Name: t.name, State: t.state, Required: t.policy.Required,
			Restarts: t.restarts, LastError: t.lastErr, Since: t.since,
		}
	}
	return out
}

// Wait waits until the named coroutine has ended for good (stopped or
// failed) and returns the error of its last failed run, or nil. Waiting for
// one that has already ended returns at once. It fails if there is no such
// coroutine or ctx ends first.
func (s *Sched) Wait(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		t, ok := s.byName[name]
		if !ok {
			s.mu.Unlock()
			return fmt.Errorf("runner: wait for coroutine %q: no such coroutine", name)
		}
		st, lastErr, changed := t.state, t.lastErr, s.changed
		s.mu.Unlock()
		switch st {
		case StateFailed:
			return lastErr
		case StateStopped:
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("runner: wait for coroutine %q: %w", name, ctxErr(ctx))
		}
	}
}

// StopError is Stop's error: coroutines that had not returned when the grace
// period ended. They still run (Go cannot kill a goroutine); their contexts
// are cancelled. It wraps ErrTimeout.
type StopError struct {
	Names []string
	Grace time.Duration
}

func (e *StopError) Error() string {
	return fmt.Sprintf("runner: stop: %d coroutine(s) still running after %v: %s",
		len(e.Names), e.Grace, strings.Join(e.Names, ", "))
}

// Unwrap makes errors.Is(err, ErrTimeout) true.
func (e *StopError) Unwrap() error { return ErrTimeout }

// Stop cancels every coroutine's context (coroutines in backoff end at
// once; none is restarted) and waits up to grace for them to return. It
// returns nil when all did, else a *StopError naming the others. grace <= 0
// means no limit: Stop waits until all have returned. After Stop nothing can
// be added or started; calling Stop again waits again for those still
// running.
func (s *Sched) Stop(grace time.Duration) error {
	s.mu.Lock()
	s.stopped = true
	if s.cancel != nil {
		s.cancel()
	}
	var running []*task
	for _, t := range s.tasks {
		if t.done == nil {
			if t.state == StateStarting {
				s.setStateLocked(t, StateStopped)
			}
			continue
		}
		running = append(running, t)
	}
	s.mu.Unlock()

	dl := newDeadline(grace)
	defer dl.stop()
	expired := false
	var stuck []string
	for _, t := range running {
		if !expired {
			select {
			case <-t.done:
				continue
			case <-dl.C:
				expired = true
			}
		}
		select {
		case <-t.done:
		default:
			stuck = append(stuck, t.name)
		}
	}
	if len(stuck) > 0 {
		s.log.Warn("coroutines still running after the grace period", "grace", grace, "names", strings.Join(stuck, ", "))
		return &StopError{Names: stuck, Grace: grace}
	}
	s.log.Debug("stopped", "coroutines", len(running))
	return nil
}
