package engine

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
	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/observe"
)

// pluginPool shares plugin processes between generations. Each binary file
// version (path and content) gets a plugins.Host of its own, running that
// one binary; a generation that uses an unchanged binary reuses the running
// process (its instances are created in it beside the older generation's),
// and a changed binary starts a new process while the old one keeps serving
// the generation that is draining. A Host is reference-counted by the
// generations that used it and closed, after its requests have ended, when
// the last of them is released.
//
// A binary is unchanged when its size and modification time are those seen
// when its process started or, failing that, when its SHA-256 is the same
// (a touched file). A process that failed or is in a crash loop is never
// reused: the reload starts a new one (and says so).
type pluginPool struct {
	opts plugins.HostOptions
	core runner.Core
	log  hclog.Logger

	finder *plugins.Host // finds binaries; never starts one

	mu      sync.Mutex
	entries map[string][]*poolEntry // by resolved binary path, oldest first
}

// poolEntry is one version of one binary and the Host running it.
type poolEntry struct {
	path  string
	stamp fileStamp
	sum   []byte
	host  *plugins.Host
	gens  map[int]bool // generations holding it
}

// fileStamp is what a cheap check of a file sees.
type fileStamp struct {
	size    int64
	modTime time.Time
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: st.Size(), modTime: st.ModTime()}, nil
}

func newPluginPool(opts plugins.HostOptions, core runner.Core) *pluginPool {
	if opts.Logger == nil {
		opts.Logger = hclog.Default()
	}
	return &pluginPool{
		opts:    opts,
		core:    core,
		log:     opts.Logger.Named("plugins"),
		finder:  plugins.NewHost(opts),
		entries: map[string][]*poolEntry{},
	}
}

// setCore makes c the Core served to every plugin process, running or to come.
func (p *pluginPool) setCore(c runner.Core) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.core = c
	for _, list := range p.entries {
		for _, e := range list {
			e.host.SetCore(c)
		}
	}
}

// forGeneration returns the DistResolver generation gen loads with.
func (p *pluginPool) forGeneration(gen int) *genPlugins {
	return &genPlugins{pool: p, gen: gen, used: map[*poolEntry]bool{}, spans: map[*poolEntry][2]plugins.Mark{}}
}

// acquire returns the entry for the binary at path for generation gen,
// starting a new Host when the binary changed.
func (p *pluginPool) acquire(path string, gen int) (*poolEntry, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	stamp, err := stampOf(abs)
	if err != nil {
		return nil, fmt.Errorf("plugin binary %s: %w", abs, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.entries[abs]
	var sum []byte
	why := "plugin binary changed; starting a new process beside the old one"
	if n := len(list); n > 0 {
		e := list[n-1]
		if st := failedState(e); st != plugins.StateNew {
			why = "plugin process failed; the reload starts it again"
			if st == plugins.StateCrashLoop {
				why = "plugin process is in a crash loop; the reload starts it again now"
			}
		} else {
			if e.stamp == stamp {
				e.gens[gen] = true
				return e, nil
			}
			// Hashing a binary costs tens of milliseconds of CPU: only
			// when the size leaves the question open, and only once.
			if stamp.size == e.stamp.size {
				if sum, err = plugins.FileSum(abs); err == nil && string(sum) == string(e.sum) {
					e.stamp = stamp
					e.gens[gen] = true
					return e, nil
				}
			}
		}
	}
	if sum == nil {
		if sum, err = plugins.FileSum(abs); err != nil {
			return nil, fmt.Errorf("plugin binary %s: %w", abs, err)
		}
	}
	h := plugins.NewHost(p.opts)
	if p.core != nil {
		h.SetCore(p.core)
	}
	e := &poolEntry{path: abs, stamp: stamp, sum: sum, host: h, gens: map[int]bool{gen: true}}
	p.entries[abs] = append(list, e)
	if len(list) > 0 {
		p.log.Info(why, "path", abs, "generation", gen)
	}
	return e, nil
}

// failedState returns the state of e's process when it may not serve
// another generation (failed, crash_loop: a reload starts it again at once
// rather than after the cooldown; closed), or StateNew when it may.
func failedState(e *poolEntry) plugins.State {
	for _, info := range e.host.Plugins() {
		switch info.State {
		case plugins.StateFailed, plugins.StateCrashLoop, plugins.StateClosed:
			return info.State
		}
	}
	return plugins.StateNew
}

// release drops generation gen's hold on entries and closes, in parallel and
// within ctx, the Hosts no generation holds any more (their requests may
// finish first; see plugins.Host.Close). In a Host that other generations
// still use, the generation's instances are destroyed (spans: the Marks
// before and after the generation was loaded).
func (p *pluginPool) release(ctx context.Context, gen int, entries []*poolEntry, spans map[*poolEntry][2]plugins.Mark) error {
	var closing, shared []*poolEntry
	p.mu.Lock()
	for _, e := range entries {
		delete(e.gens, gen)
		if len(e.gens) > 0 {
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
	p.mu.Unlock()
	var derrs []error
	for _, e := range shared {
		if sp, ok := spans[e]; ok && sp[1] != nil {
			derrs = append(derrs, e.host.Destroy(ctx, sp[0], sp[1]))
		}
	}
	errs := make([]error, len(closing))
	var wg sync.WaitGroup
	for i, e := range closing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.log.Debug("stopping plugin process no generation uses", "path", e.path)
			errs[i] = e.host.Close(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(append(derrs, errs...)...)
}

// closeAll closes every Host still in the pool (there should be none once
// every generation was released).
func (p *pluginPool) closeAll(ctx context.Context) error {
	p.mu.Lock()
	var all []*poolEntry
	for _, list := range p.entries {
		all = append(all, list...)
	}
	p.entries = map[string][]*poolEntry{}
	p.mu.Unlock()
	var errs []error
	for _, e := range all {
		errs = append(errs, e.host.Close(ctx))
	}
	return errors.Join(errs...)
}

// infos describes every process in the pool, with the generations using it.
func (p *pluginPool) infos() []observe.Plugin {
	p.mu.Lock()
	var all []*poolEntry
	for _, list := range p.entries {
		all = append(all, list...)
	}
	type held struct {
		e    *poolEntry
		gens []int
	}
	hs := make([]held, 0, len(all))
	for _, e := range all {
		var gens []int
		for g := range e.gens {
			gens = append(gens, g)
		}
		sort.Ints(gens)
		hs = append(hs, held{e, gens})
	}
	p.mu.Unlock()
	var out []observe.Plugin
	for _, h := range hs {
		for _, i := range h.e.host.Plugins() {
			out = append(out, observe.Plugin{Path: i.Path, Dist: i.Dist, Version: i.Version, PID: i.PID, State: i.State.String(), NextRestart: i.NextRestart, Restarts: i.Restarts, Instances: i.Instances, LogDropped: i.LogDropped, Generations: h.gens})
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

// genPlugins is the entrypoints.DistResolver of one generation: it finds
// binaries as a plugins.Host does and starts or reuses them through the pool,
// remembering which it used.
type genPlugins struct {
	pool *pluginPool
	gen  int

	mu   sync.Mutex
	used map[*poolEntry]bool
	// order lists the entries in the order first used.
	order []*poolEntry
	// spans holds, per entry, the Host's Mark when the generation first
	// used it and when its load ended (finish): its instances lie between.
	spans map[*poolEntry][2]plugins.Mark
	// afterServer holds the Marks once the server section was loaded: the
	// instances before them (the server's) outlive the generation while
	// its server serves later generations; Engine.forget destroys them
	// once that server has stopped.
	afterServer map[*poolEntry]plugins.Mark
}

// Egg finds paster-plugin-NAME in the plugin path and returns its dist.
func (g *genPlugins) Egg(name string, from entrypoints.Origin) (*entrypoints.Dist, error) {
	path, err := g.pool.finder.Find(name, from)
	if err != nil {
		return nil, err
	}
	e, err := g.acquire(path)
	if err != nil {
		return nil, err
	}
	return e.host.Egg(name, from)
}

// Binary returns the dist served by the executable at path.
func (g *genPlugins) Binary(path string, from entrypoints.Origin) (*entrypoints.Dist, error) {
	if !filepath.IsAbs(path) && from.File != "" {
		path = filepath.Join(filepath.Dir(from.File), path)
	}
	e, err := g.acquire(path)
	if err != nil {
		return nil, err
	}
	return e.host.Binary(e.path, from)
}

func (g *genPlugins) acquire(path string) (*poolEntry, error) {
	e, err := g.pool.acquire(path, g.gen)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	if !g.used[e] {
		g.used[e] = true
		g.order = append(g.order, e)
		g.spans[e] = [2]plugins.Mark{e.host.Mark(), nil}
	}
	g.mu.Unlock()
	return e, nil
}

// serverLoaded records where the server section's instances end.
func (g *genPlugins) serverLoaded() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.afterServer = map[*poolEntry]plugins.Mark{}
	for e := range g.spans {
		g.afterServer[e] = e.host.Mark()
	}
}

// serverSpans returns, per Host, the span of the instances the server
// section created when it was loaded (see afterServer).
func (g *genPlugins) serverSpans() map[*poolEntry][2]plugins.Mark {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[*poolEntry][2]plugins.Mark, len(g.afterServer))
	for e, m := range g.afterServer {
		out[e] = [2]plugins.Mark{g.spans[e][0], m}
	}
	return out
}

// marks returns the current Mark of every Host the generation used.
func (g *genPlugins) marks() map[*poolEntry]plugins.Mark {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[*poolEntry]plugins.Mark, len(g.order))
	for _, e := range g.order {
		out[e] = e.host.Mark()
	}
	return out
}

// finish records where the generation's instances end in each Host; call
// it when the load is over (generations load one at a time, so what a Host
// created in between is this generation's).
func (g *genPlugins) finish() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for e, sp := range g.spans {
		g.spans[e] = [2]plugins.Mark{sp[0], e.host.Mark()}
	}
}

// entries returns the entries the generation used.
func (g *genPlugins) entries() []*poolEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*poolEntry(nil), g.order...)
}

// paths returns the binaries the generation started or reused.
func (g *genPlugins) paths() []string {
	var out []string
	for _, e := range g.entries() {
		out = append(out, e.path)
	}
	return out
}

// release releases the generation's processes (see pluginPool.release).
//
// keepServer keeps the instances of the server section (the generation's
// server still serves a later generation): destroying them would lose the
// server instance if its plugin restarted.
func (g *genPlugins) release(ctx context.Context, keepServer bool) error {
	g.mu.Lock()
	spans := make(map[*poolEntry][2]plugins.Mark, len(g.spans))
	for e, sp := range g.spans {
		if sp[1] == nil {
			sp[1] = e.host.Mark() // a load that failed midway
		}
		if m, ok := g.afterServer[e]; ok && keepServer {
			sp[0] = m
		}
		spans[e] = sp
	}
	g.mu.Unlock()
	return g.pool.release(ctx, g.gen, g.entries(), spans)
}
