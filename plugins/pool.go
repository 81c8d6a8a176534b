package plugins

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
)

// Pool shares plugin processes between scopes, so that every load of a
// configuration (package engine's generations) owns exactly what it
// created while the processes serve on across loads.
//
// The lifecycle: Scope returns a Scope, an entrypoints.DistResolver. A
// load resolves its dists through it; each plugin binary it names is
// started, or reused when a live scope already runs the same file version,
// and every instance its dists' factories create is recorded in the
// scope. Scope.Close destroys exactly those instances and stops, after
// their requests have ended, the processes no other live scope uses. A
// load that fails closes its scope, which releases what it made so far.
// Close stops whatever is left.
//
// Each binary file version (path and content) gets a Host of its own,
// running that one binary: a scope that uses an unchanged binary reuses
// the running process (its instances are created in it beside the older
// scopes'), and a changed binary starts a new process while the old one
// keeps serving the scopes that hold it. A binary is unchanged when its
// size and modification time are those seen when its process started or,
// failing that, when its SHA-256 is the same (a touched file). A process
// that failed or is in a crash loop is never reused: the next scope starts
// a new one (and says so).
type Pool struct {
	opts HostOptions
	log  hclog.Logger

	finder *Host // finds binaries; never starts one

	mu      sync.Mutex
	core    runner.Core
	entries map[string][]*poolEntry // by resolved binary path, oldest first
}

// poolEntry is one version of one binary and the Host running it.
type poolEntry struct {
	path    string
	size    int64     // of the file when last seen unchanged
	modTime time.Time // likewise
	sum     []byte
	host    *Host
	scopes  map[*Scope]bool // live scopes holding it
}

// NewPool returns a Pool whose Hosts run with opts; it starts nothing
// until a scope asks for a dist.
func NewPool(opts HostOptions) *Pool {
	if opts.Logger == nil {
		opts.Logger = hclog.Default()
	}
	return &Pool{
		opts:    opts,
		log:     opts.Logger.Named("plugins"),
		finder:  NewHost(opts),
		entries: map[string][]*poolEntry{},
	}
}

// SetCore makes c the Core served to every plugin process of the pool,
// running or to come (Host.SetCore).
func (p *Pool) SetCore(c runner.Core) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.core = c
	for _, list := range p.entries {
		for _, e := range list {
			e.host.SetCore(c)
		}
	}
}

// Scope returns a new, empty scope. id labels it in PluginInfo.Scopes
// (package engine passes the generation number; scopes may share an id).
func (p *Pool) Scope(id int) *Scope {
	return &Scope{pool: p, id: id, made: map[*proc][]uint64{}}
}

// acquire returns the entry running the binary at path for scope s,
// starting a new Host when the binary changed or its process failed.
func (p *Pool) acquire(path string, s *Scope) (*poolEntry, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("plugin binary %s: %w", abs, err)
	}
	size, modTime := st.Size(), st.ModTime()
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.entries[abs]
	var sum []byte
	why := "plugin binary changed; starting a new process beside the old one"
	if n := len(list); n > 0 {
		e := list[n-1]
		if st := failedState(e); st != StateNew {
			why = "plugin process failed; the reload starts it again"
			if st == StateCrashLoop {
				why = "plugin process is in a crash loop; the reload starts it again now"
			}
		} else {
			if e.size == size && e.modTime.Equal(modTime) {
				e.scopes[s] = true
				return e, nil
			}
			// Hashing a binary costs tens of milliseconds of CPU: only
			// when the size leaves the question open, and only once.
			if size == e.size {
				if sum, err = FileSum(abs); err == nil && string(sum) == string(e.sum) {
					e.modTime = modTime
					e.scopes[s] = true
					return e, nil
				}
			}
		}
	}
	if sum == nil {
		if sum, err = FileSum(abs); err != nil {
			return nil, fmt.Errorf("plugin binary %s: %w", abs, err)
		}
	}
	h := NewHost(p.opts)
	if p.core != nil {
		h.SetCore(p.core)
	}
	e := &poolEntry{path: abs, size: size, modTime: modTime, sum: sum, host: h, scopes: map[*Scope]bool{s: true}}
	p.entries[abs] = append(list, e)
	if len(list) > 0 {
		p.log.Info(why, "path", abs, "scope", s.id)
	}
	return e, nil
}

// failedState returns the state of e's process when it may not serve
// another scope (failed, crash_loop: a new scope starts it again at once
// rather than after the cooldown; closed), or StateNew when it may.
func failedState(e *poolEntry) State {
	for _, info := range e.host.Plugins() {
		switch info.State {
		case StateFailed, StateCrashLoop, StateClosed:
			return info.State
		}
	}
	return StateNew
}

// release drops scope s's hold on entries and returns those no scope holds
// any more, removed from the pool, and those other scopes still hold.
func (p *Pool) release(s *Scope, entries []*poolEntry) (closing, shared []*poolEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range entries {
		delete(e.scopes, s)
		if len(e.scopes) > 0 {
			shared = append(shared, e)
			continue
		}
		closing = append(closing, e)
		list := p.entries[e.path]
		for i, x := range list {
			if x == e {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(p.entries, e.path)
		} else {
			p.entries[e.path] = list
		}
	}
	return closing, shared
}

// all returns every entry of the pool.
func (p *Pool) all() []*poolEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*poolEntry
	for _, list := range p.entries {
		out = append(out, list...)
	}
	return out
}

// Close stops every process still in the pool (Host.Close), whatever scope
// holds it; there are none once every scope was closed. Scopes must not be
// used afterwards.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	var all []*poolEntry
	for _, list := range p.entries {
		all = append(all, list...)
	}
	p.entries = map[string][]*poolEntry{}
	p.mu.Unlock()
	return closeHosts(ctx, all)
}

// closeHosts closes the Hosts of entries in parallel, within ctx.
func closeHosts(ctx context.Context, entries []*poolEntry) error {
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.host.Close(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Plugins describes every process in the pool, sorted by path and PID,
// each with the ids of the live scopes holding it (PluginInfo.Scopes).
func (p *Pool) Plugins() []PluginInfo {
	p.mu.Lock()
	type held struct {
		e   *poolEntry
		ids []int
	}
	var hs []held
	for _, list := range p.entries {
		for _, e := range list {
			seen := map[int]bool{}
			var ids []int
			for s := range e.scopes {
				if !seen[s.id] {
					seen[s.id] = true
					ids = append(ids, s.id)
				}
			}
			sort.Ints(ids)
			hs = append(hs, held{e, ids})
		}
	}
	p.mu.Unlock()
	var out []PluginInfo
	for _, h := range hs {
		for _, i := range h.e.host.Plugins() {
			i.Scopes = h.ids
			out = append(out, i)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].PID < out[j].PID
	})
	return out
}

// ProcessInstances asks every running plugin process of the pool how many
// instances it holds (the plugin's own count, not the host's record) and
// returns the counts by PID. A process that does not answer within ctx is
// an error naming it. It is for leak checks: after a scope closed, its
// instances are gone from the processes too.
func (p *Pool) ProcessInstances(ctx context.Context) (map[int]int, error) {
	out := map[int]int{}
	var errs []error
	for _, e := range p.all() {
		for _, pr := range e.host.procList() {
			pid, n, err := pr.instancesInProcess(ctx)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if pid != 0 {
				out[pid] = n
			}
		}
	}
	return out, errors.Join(errs...)
}

// instancesInProcess asks the running process how many instances it holds
// (the Status call); pid is 0 when no process runs.
func (p *proc) instancesInProcess(ctx context.Context) (pid, n int, err error) {
	p.mu.Lock()
	g, st := p.cur, p.state
	p.mu.Unlock()
	if g == nil || st != StateRunning {
		return 0, 0, nil
	}
	var resp wire.StatusResponse
	if err := wire.Invoke(ctx, g.pc.conn, wire.MethodStatus, wire.StatusRequest{}, &resp); err != nil {
		return 0, 0, fmt.Errorf("plugin %s (%s): asking for its instances: %w", p.name, p.path, rpcError(err))
	}
	return g.pid, resp.Instances, nil
}

// Scope is one owner's share of a Pool: the dists it resolves create their
// instances on its account (see Pool for the lifecycle). It is an
// entrypoints.DistResolver and DistLister, safe for concurrent use.
type Scope struct {
	pool *Pool
	id   int

	mu      sync.Mutex
	closed  bool
	entries []*poolEntry // in the order first used; kept after Close for Binaries
	made    map[*proc][]uint64
}

// Egg finds paster-plugin-NAME in the plugin path (Host.Find) and returns
// its dist, starting the binary unless a live scope runs the same version.
// The errors are Host.Egg's; after Close, ErrUnavailable.
func (s *Scope) Egg(name string, from entrypoints.Origin) (*entrypoints.Dist, error) {
	path, err := s.pool.finder.Find(name, from)
	if err != nil {
		return nil, err
	}
	e, err := s.acquire(path)
	if err != nil {
		return nil, err
	}
	return e.host.egg(e.path, name, from, s)
}

// Binary returns the dist served by the executable at path (relative to
// the INI file of from), starting it unless a live scope runs the same
// version. The errors are Host.Binary's; after Close, ErrUnavailable.
func (s *Scope) Binary(path string, from entrypoints.Origin) (*entrypoints.Dist, error) {
	if !filepath.IsAbs(path) && from.File != "" {
		path = filepath.Join(filepath.Dir(from.File), path)
	}
	e, err := s.acquire(path)
	if err != nil {
		return nil, err
	}
	return e.host.binary(e.path, from, s)
}

// DistNames returns the sorted names of the dists whose binaries are in
// the plugin path for a reference written in from (Host.DistNames),
// starting none: the loader suggests a near miss among them.
func (s *Scope) DistNames(from entrypoints.Origin) []string {
	return s.pool.finder.DistNames(from)
}

func (s *Scope) acquire(path string) (*poolEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("plugin binary %s: %w: its scope is closed", path, ErrUnavailable)
	}
	e, err := s.pool.acquire(path, s)
	if err != nil {
		return nil, err
	}
	for _, x := range s.entries {
		if x == e {
			return e, nil
		}
	}
	s.entries = append(s.entries, e)
	return e, nil
}

// create makes an instance in p on s's account; a nil s owns nothing (a
// Host's own dists).
func (s *Scope) create(p *proc, req *wire.CreateRequest) (uint64, wire.CreateResponse, error) {
	if s == nil {
		return p.create(req)
	}
	closedErr := fmt.Errorf("plugin binary %s: %w: creating %s %q after its scope was closed", p.path, ErrUnavailable, req.Proto, req.Name)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, wire.CreateResponse{}, closedErr
	}
	id, resp, err := p.create(req)
	if err != nil {
		return id, resp, err
	}
	s.mu.Lock()
	if s.closed {
		// Closed while the plugin created it: nobody else will destroy it.
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), p.h.opts.StartTimeout)
		defer cancel()
		return 0, wire.CreateResponse{}, errors.Join(closedErr, p.destroy(ctx, []uint64{id}))
	}
	s.made[p] = append(s.made[p], id)
	s.mu.Unlock()
	return id, resp, nil
}

// Binary is a plugin binary version a scope used.
type Binary struct {
	Path string // absolute, symlinks resolved
	Sum  []byte // SHA-256 of the file when its process started
}

// Binaries returns the binaries s started or reused, in the order first
// used (after Close too).
func (s *Scope) Binaries() []Binary {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Binary, len(s.entries))
	for i, e := range s.entries {
		out[i] = Binary{Path: e.path, Sum: e.sum}
	}
	return out
}

// Close releases what s made: the instances its dists created are
// destroyed in the processes other live scopes still use (Host.Destroy's
// rules: servers and coroutines among them must have stopped), and the
// processes no live scope uses are stopped, in parallel, after their
// requests have ended (Host.Close), all within ctx. Dists from s create
// nothing afterwards. Closing again does nothing.
func (s *Scope) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	made := s.made
	s.made = nil
	entries := append([]*poolEntry(nil), s.entries...)
	s.mu.Unlock()
	closing, shared := s.pool.release(s, entries)
	var errs []error
	for _, e := range shared {
		for _, p := range e.host.procList() {
			if ids := made[p]; len(ids) > 0 {
				errs = append(errs, p.destroy(ctx, ids))
			}
		}
	}
	for _, e := range closing {
		s.pool.log.Debug("stopping plugin process no scope uses", "path", e.path)
	}
	errs = append(errs, closeHosts(ctx, closing))
	return errors.Join(errs...)
}
