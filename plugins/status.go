package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"runtime/metrics"
	"time"

	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Coroutines a server runner in a plugin adds in code (r.Sched.Add) run on
// its scheduler in the plugin. The SDK gives each running server or runner
// instance a runner.Scheds (runner.Runner adds its scheduler to it), and
// the Status method reports it; on the host, a remoteSched in the Scheds of
// the server's context (paster serve's) asks for it whenever /health or
// /metrics is read.

// withScheds returns ctx with a runner.Scheds that Status reports for
// instance id until forget is called.
func (s *sdk) withScheds(ctx context.Context, id uint64) (_ context.Context, forget func()) {
	scheds := &runner.Scheds{}
	s.scheds.Store(id, scheds)
	return runner.WithScheds(ctx, scheds), func() { s.scheds.CompareAndDelete(id, scheds) }
}

// status answers the host's Status call.
func (s *sdk) status(_ context.Context, in []byte) (any, error) {
	var req wire.StatusRequest
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, err
	}
	var resp wire.StatusResponse
	s.mu.RLock()
	resp.Instances = len(s.handlers) + len(s.filters) + len(s.servers) + len(s.runners) + len(s.coroutines)
	s.mu.RUnlock()
	resp.Goroutines = runtime.NumGoroutine()
	stacks := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(stacks)
	if stacks[0].Value.Kind() == metrics.KindUint64 {
		resp.StackBytes = stacks[0].Value.Uint64()
	}
	if v, ok := s.scheds.Load(req.ID); ok {
		for _, c := range v.(*runner.Scheds).Status() {
			w := wire.CoroutineStatus{Name: c.Name, State: c.State.String(), Required: c.Required, Restarts: c.Restarts, Since: c.Since}
			if c.LastError != nil {
				w.LastError = c.LastError.Error()
			}
			resp.Coroutines = append(resp.Coroutines, w)
		}
	}
	return resp, nil
}

// statusTimeout bounds a Status call: /health waits for it.
const statusTimeout = 2 * time.Second

// remoteSched is the scheduler of a server or runner instance running in a
// plugin, as a runner.StatusSource.
type remoteSched struct {
	p  *proc
	id uint64
}

// Status asks the plugin; it returns nothing while the plugin does not run,
// when the plugin predates Status, or when the call fails (logged at debug
// level).
func (r remoteSched) Status() []runner.CoroutineStatus {
	r.p.mu.Lock()
	g, st := r.p.cur, r.p.state
	r.p.mu.Unlock()
	if g == nil || st != StateRunning {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	var resp wire.StatusResponse
	if err := wire.Invoke(ctx, g.pc.conn, wire.MethodStatus, wire.StatusRequest{ID: r.id}, &resp); err != nil {
		if status.Code(err) != codes.Unimplemented {
			r.p.log.Debug("asking for the coroutines of a plugin server", "id", r.id, "error", rpcError(err))
		}
		return nil
	}
	out := make([]runner.CoroutineStatus, 0, len(resp.Coroutines))
	for _, c := range resp.Coroutines {
		rc := runner.CoroutineStatus{Name: c.Name, State: parseState(c.State), Required: c.Required, Restarts: c.Restarts, Since: c.Since}
		if c.LastError != "" {
			rc.LastError = errors.New(c.LastError)
		}
		out = append(out, rc)
	}
	return out
}

// parseState returns the runner.State named s (StateFailed for a name this
// host does not know).
func parseState(s string) runner.State {
	for st := runner.StateStarting; st <= runner.StateFailed; st++ {
		if st.String() == s {
			return st
		}
	}
	return runner.StateFailed
}
