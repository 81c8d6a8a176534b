package runner

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// TestRunSchedsVisible: the coroutines a server runner adds in code are in
// the Scheds of its context while it runs, with state, restarts and the
// last error; gone once it returned.
func TestRunSchedsVisible(t *testing.T) {
	t.Parallel()
	r := newTestRunner(t, serverLocal())
	if err := r.Sched.Add("clock", func(ctx context.Context) error {
		return errors.New("tick failed")
	}, Policy{Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	scheds := &Scheds{}
	ctx, cancel := context.WithCancel(WithScheds(context.Background(), scheds))
	done := startRun(t, r, ctx)
	testsync.Recv(t, "bound", r.HTTP.Bound())
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := scheds.Status()
		if len(st) == 1 && st[0].Name == "clock" && st[0].Restarts > 1 && st[0].LastError != nil && st[0].LastError.Error() == "tick failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runner's clock coroutine is not seen failing: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := testsync.Recv(t, "Run", done); err != nil {
		t.Fatal(err)
	}
	if st := scheds.Status(); len(st) != 0 {
		t.Fatalf("after Run: %+v", st)
	}
}

// TestSchedsNewestWins: a name two schedulers use is reported once, as the
// newest has it.
func TestSchedsNewestWins(t *testing.T) {
	t.Parallel()
	var s Scheds
	old := fixedStatus{{Name: "tick", State: StateFailed}, {Name: "old"}}
	remove := s.Add(old)
	s.Add(fixedStatus{{Name: "tick", State: StateReady}})
	st := s.Status()
	if len(st) != 2 || st[0].Name != "tick" || st[0].State != StateReady || st[1].Name != "old" {
		t.Fatalf("status %+v", st)
	}
	remove()
	if st := s.Status(); len(st) != 1 || st[0].State != StateReady {
		t.Fatalf("after remove: %+v", st)
	}
}

type fixedStatus []CoroutineStatus

func (s fixedStatus) Status() []CoroutineStatus { return s }
