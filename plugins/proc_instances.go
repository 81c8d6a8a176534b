package plugins

// The instances a plugin process holds: creating them (and remembering
// them for restarts), destroying them, naming apps for the plugin, and
// running servers, runners and coroutines.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// create makes an instance in the plugin and remembers it for restarts.
func (p *proc) create(req *wire.CreateRequest) (uint64, wire.CreateResponse, error) {
	var resp wire.CreateResponse
	req.ID = p.nextID.Add(1)
	p.mu.Lock()
	g := p.cur
	if g == nil || p.state == StateClosed || p.state == StateFailed {
		st := p.state
		p.mu.Unlock()
		return 0, resp, fmt.Errorf("plugin binary %s: %w (%s)", p.path, ErrUnavailable, st)
	}
	p.specs = append(p.specs, req)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.h.opts.StartTimeout)
	defer cancel()
	if err := wire.Invoke(ctx, g.pc.conn, wire.MethodCreate, req, &resp); err != nil {
		p.mu.Lock()
		for i, s := range p.specs {
			if s == req {
				p.specs = append(p.specs[:i], p.specs[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		return 0, resp, fmt.Errorf("plugin %s (%s): creating %s %q: %w", p.manifest.Name, p.path, req.Proto, req.Name, rpcError(err))
	}
	return req.ID, resp, nil
}

// recreate creates specs again in the process behind conn (a restarted
// one), in order. On error it says which failed.
func recreate(ctx context.Context, conn *grpc.ClientConn, specs []*wire.CreateRequest) (string, error) {
	for _, s := range specs {
		if err := wire.Invoke(ctx, conn, wire.MethodCreate, s, nil); err != nil {
			return fmt.Sprintf("recreating %s %q", s.Proto, s.Name), err
		}
	}
	return "", nil
}

// destroy forgets the instances ids: the plugin drops them (closing those
// that implement io.Closer), a restart no longer recreates them, and the
// host references only they held are released. A plugin built before
// Destroy existed keeps its instances (logged at debug level).
func (p *proc) destroy(ctx context.Context, ids []uint64) error {
	gone := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
	}
	p.mu.Lock()
	var keep, dropped []*wire.CreateRequest
	for _, s := range p.specs {
		if gone[s.ID] {
			dropped = append(dropped, s)
		} else {
			keep = append(keep, s)
		}
	}
	p.specs = keep
	g, st := p.cur, p.state
	p.mu.Unlock()
	if len(dropped) == 0 {
		return nil
	}
	ids = make([]uint64, len(dropped))
	for i, s := range dropped {
		ids[i] = s.ID
		if s.Next.Host != 0 {
			p.h.refs.apps.Delete(s.Next.Host)
		}
		if s.Loader != 0 {
			p.h.refs.loaders.Delete(s.Loader)
		}
	}
	if g == nil || st != StateRunning {
		return nil
	}
	var resp struct{}
	if err := wire.Invoke(ctx, g.pc.conn, wire.MethodDestroy, &wire.DestroyRequest{IDs: ids}, &resp); err != nil {
		if status.Code(err) == codes.Unimplemented {
			p.log.Debug("plugin cannot destroy instances (built before Destroy); they stay", "count", len(ids))
			return nil
		}
		return fmt.Errorf("plugin %s (%s): destroying %d instances: %w", p.manifest.Name, p.path, len(ids), rpcError(err))
	}
	p.log.Debug("instances destroyed", "count", len(ids))
	return nil
}

// ref names next for the plugin: an instance of this plugin stays local.
func (p *proc) ref(next http.Handler) wire.AppRef {
	if a, ok := next.(interface{ remote() (*proc, uint64) }); ok {
		if ap, id := a.remote(); ap == p {
			return wire.AppRef{Local: id}
		}
	}
	return wire.AppRef{Host: p.h.refs.addApp(next)}
}

// run runs instance req.ID in the plugin until it returns or ctx ends (then
// it asks the instance to stop and waits for it). A crash of the plugin
// waits for the restart and runs the instance again.
func (p *proc) run(ctx context.Context, req wire.RunRequest) error {
	p.runs.Add(1)
	defer p.runs.Done()
	for {
		g, err := p.waitRunning(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err, crashed := p.runOnce(ctx, g, req)
		if !crashed {
			return err
		}
		p.waitPast(ctx, g)
		p.log.Warn("instance lost with its plugin process; running it again after the restart", "id", req.ID)
	}
}

// waitPast waits until g is no longer the running process (its exit was
// seen), at most 2 s, so that a Run loop does not spin on a dead process.
func (p *proc) waitPast(ctx context.Context, g *incarnation) {
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	for {
		p.mu.Lock()
		current := p.cur == g && p.state == StateRunning
		ch := p.changed
		p.mu.Unlock()
		if !current {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-p.closing:
			return
		case <-t.C:
			return
		}
	}
}

func (p *proc) runOnce(ctx context.Context, g *incarnation, req wire.RunRequest) (error, bool) {
	sctx, cancel := context.WithCancel(p.runCtx)
	defer cancel()
	s, err := g.pc.conn.NewStream(sctx, &wire.RunStream, wire.MethodRun, wire.CallCodec)
	if err != nil {
		return nil, true
	}
	data, _ := json.Marshal(req)
	if err := s.SendMsg(&wire.Blob{Data: data}); err != nil {
		return nil, true
	}
	type result struct {
		res wire.RunResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		for {
			var b wire.Blob
			var r result
			if r.err = s.RecvMsg(&b); r.err == nil {
				r.err = json.Unmarshal(b.Data, &r.res)
			}
			if r.err == nil && r.res.Ready {
				// The instance reported ready (runner.Ready in the
				// plugin): pass it on to the host's scheduler.
				runner.Ready(ctx)
				continue
			}
			done <- r
			return
		}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		_ = s.CloseSend()
		if r = <-done; r.err != nil {
			return nil, false
		}
	case <-p.closing:
		_ = s.CloseSend()
		r = <-done
	}
	if r.err != nil {
		// A broken Run stream is most often the process dying, and the
		// stream may break before the exit is seen: give it a moment.
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-g.exited:
			return nil, true
		case <-p.closing:
			return nil, false
		case <-t.C:
		}
		return fmt.Errorf("plugin %s: running instance: %w", p.name, rpcError(r.err)), false
	}
	if r.res.Error != "" {
		return errors.New(r.res.Error), false
	}
	return nil, false
}
