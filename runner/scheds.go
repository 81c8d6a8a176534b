package runner

import (
	"context"
	"sync"
)

// StatusSource reports the status of a scheduler's coroutines: a *Sched,
// or a scheduler elsewhere (the plugins package reaches one inside a plugin
// process).
type StatusSource interface {
	Status() []CoroutineStatus
}

// Scheds is the set of schedulers a serving process reports on besides the
// one it runs its startup coroutines on: a Runner adds its scheduler to the
// Scheds of its Run context (WithScheds) while it runs, so the coroutines a
// server runner adds in code (r.Sched.Add) show in paster serve's /health
// and /metrics. The zero value is an empty set; it is safe for concurrent
// use.
type Scheds struct {
	mu   sync.Mutex
	next int
	srcs map[int]StatusSource
	seq  []int
}

// Add adds src to the set until remove is called.
func (s *Scheds) Add(src StatusSource) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srcs == nil {
		s.srcs = map[int]StatusSource{}
	}
	id := s.next
	s.next++
	s.srcs[id] = src
	s.seq = append(s.seq, id)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.srcs, id)
		for i, x := range s.seq {
			if x == id {
				s.seq = append(s.seq[:i:i], s.seq[i+1:]...)
				break
			}
		}
	}
}

// Status returns the coroutines of every scheduler in the set. A name that
// two schedulers use (an old and a new server overlapping during a reload)
// is reported once, as the scheduler added last has it.
func (s *Scheds) Status() []CoroutineStatus {
	s.mu.Lock()
	srcs := make([]StatusSource, 0, len(s.seq))
	for _, id := range s.seq {
		srcs = append(srcs, s.srcs[id])
	}
	s.mu.Unlock()
	var out []CoroutineStatus
	at := map[string]int{}
	for _, src := range srcs {
		for _, c := range src.Status() {
			if i, ok := at[c.Name]; ok {
				out[i] = c
				continue
			}
			at[c.Name] = len(out)
			out = append(out, c)
		}
	}
	return out
}

type schedsKey struct{}

// WithScheds returns a copy of ctx carrying s, for Runner.Run to add its
// scheduler to.
func WithScheds(ctx context.Context, s *Scheds) context.Context {
	return context.WithValue(ctx, schedsKey{}, s)
}

// SchedsFrom returns the Scheds ctx carries, or nil.
func SchedsFrom(ctx context.Context) *Scheds {
	s, _ := ctx.Value(schedsKey{}).(*Scheds)
	return s
}
