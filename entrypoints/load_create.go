package entrypoints

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
)

// filterFunc is a filter as the loader composes it: applying it may fail,
// because a filter-app factory runs when its filter is applied.
type filterFunc func(next http.Handler) (http.Handler, error)

// protect runs a factory and turns its panic into an error.
func protect(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}

// factoryErr places the error of c's factory at the use line that named it,
// with the values of c's secret keys (IsSecret, local and global) scrubbed
// from the factory's message. An error that already is a loader error (a
// composite's child failed) is returned as it is: it names its own place
// and chain.
func (s *Session) factoryErr(c *ctx, err error) error {
	var le *Error
	if errors.As(err, &le) {
		return err
	}
	err = redactErr(err, secretValues(c.global, c.local))
	return s.fail(c.chain, because(ErrFactory, "%s factory %s failed: %w", c.kind, c.ref, err))
}

// call runs f, the factory call of entry context c, turning a panic into an
// error; isNil reports whether f made nothing. Errors are placed at the use
// line that named the factory.
func (s *Session) call(c *ctx, f func() error, isNil func() bool) error {
	err := protect(f)
	if err == nil && isNil() {
		err = errors.New("it returned nil and no error")
	}
	if err != nil {
		return s.factoryErr(c, err)
	}
	return nil
}

// shown returns l as factories receive it: the file of each key's location
// relative to the base directory when it lies below it, so that
// Local.Errorf messages read like the loader's own.
func (s *Session) shown(l Local) Local {
	out := l.clone(0)
	for k, w := range out.where {
		out.where[k] = relLocation(s.base, w)
	}
	for _, sh := range l.Shadows() {
		sh.At = relLocation(s.base, sh.At)
		out = out.WithShadow(sh)
	}
	return out
}

// makeApp creates the application of c.
func (s *Session) makeApp(c *ctx) (http.Handler, *Node, error) {
	n := s.node(c)
	switch c.shape {
	case shapeFilterWith, shapeFilterApp:
		// filter-with creates the filter first, filter-app the application
		// first, as PasteDeploy does.
		var (
			f      filterFunc
			app    http.Handler
			fn, an *Node
			err    error
		)
		if c.shape == shapeFilterWith {
			if f, fn, err = s.makeFilter(c.filter); err == nil {
				app, an, err = s.makeApp(c.next)
			}
		} else {
			if app, an, err = s.makeApp(c.next); err == nil {
				f, fn, err = s.makeFilter(c.filter)
			}
		}
		if err != nil {
			return nil, nil, err
		}
		h, err := f(app)
		if err != nil {
			return nil, nil, err
		}
		n.Children = []*Node{fn, an}
		return h, n, nil
	case shapePipeline:
		app, an, err := s.makeApp(c.next)
		if err != nil {
			return nil, nil, err
		}
		fs := make([]filterFunc, len(c.filters))
		for i, fc := range c.filters {
			f, fn, err := s.makeFilter(fc)
			if err != nil {
				return nil, nil, err
			}
			fs[i] = f
			n.Children = append(n.Children, fn)
		}
		n.Children = append(n.Children, an)
		h := app
		for i := len(fs) - 1; i >= 0; i-- {
			if h, err = fs[i](h); err != nil {
				return nil, nil, err
			}
		}
		return h, n, nil
	}
	var h http.Handler
	global := copyMap(c.global)
	var err error
	if c.proto == ProtoComposite {
		l := &compositeLoader{s: s, c: c, node: n}
		err = s.call(c, func() (err error) { h, err = c.dist.Composites[c.ref.Name](l, global, s.shown(c.local)); return err }, func() bool { return h == nil })
	} else {
		err = s.call(c, func() (err error) { h, err = c.dist.Apps[c.ref.Name](global, s.shown(c.local)); return err }, func() bool { return h == nil })
	}
	if err != nil {
		return nil, nil, err
	}
	s.own(h)
	s.collect(c, h)
	return h, n, nil
}

// makeFilter creates the filter of c.
func (s *Session) makeFilter(c *ctx) (filterFunc, *Node, error) {
	n := s.node(c)
	if c.shape == shapeFilterWith {
		// A filter section with filter-with = F2 makes F2(F1(x)).
		outer, on, err := s.makeFilter(c.filter)
		if err != nil {
			return nil, nil, err
		}
		inner, in, err := s.makeFilter(c.next)
		if err != nil {
			return nil, nil, err
		}
		n.Children = []*Node{on, in}
		return func(next http.Handler) (http.Handler, error) {
			h, err := inner(next)
			if err != nil {
				return nil, err
			}
			return outer(h)
		}, n, nil
	}
	global := copyMap(c.global)
	if c.proto == ProtoFilterApp {
		fa, local := c.dist.FilterApps[c.ref.Name], s.shown(c.local)
		return func(next http.Handler) (h http.Handler, err error) {
			if err := s.call(c, func() (err error) { h, err = fa(next, copyMap(global), local); return err }, func() bool { return h == nil }); err != nil {
				return nil, err
			}
			s.own(h)
			s.collect(c, h)
			return h, nil
		}, n, nil
	}
	var f Filter
	if err := s.call(c, func() (err error) { f, err = c.dist.Filters[c.ref.Name](global, s.shown(c.local)); return err }, func() bool { return f == nil }); err != nil {
		return nil, nil, err
	}
	return func(next http.Handler) (h http.Handler, err error) {
		err = s.call(c, func() error { h = f(next); return nil }, func() bool { return h == nil })
		if err == nil {
			s.own(h)
		}
		return h, err
	}, n, nil
}

// makeServer creates the server of c and the startup coroutines its section
// registers.
func (s *Session) makeServer(c *ctx) (Server, *Node, error) {
	n := s.node(c)
	global := copyMap(c.global)
	var srv Server
	if c.proto == ProtoRunner {
		r, local := c.dist.Runners[c.ref.Name], s.shown(c.local)
		srv = func(ctx context.Context, app http.Handler) error { return r(ctx, app, global, local) }
	} else if err := s.call(c, func() (err error) { srv, err = c.dist.Servers[c.ref.Name](global, s.shown(c.local)); return err }, func() bool { return srv == nil }); err != nil {
		return nil, nil, err
	}
	if cs := c.core; cs != nil {
		cc := cs.ctx
		origin := cc.loc
		if origin == (Location{}) {
			origin = cs.at
		}
		s.Core = &CoreSpec{
			Name: cs.name, EntryPoint: cc.ref.String(), Local: s.shown(cc.local), Global: copyMap(cc.global), Origin: origin,
			Make: func() (core Core, err error) {
				err = s.call(cc, func() (err error) {
					core, err = cc.dist.Cores[cc.ref.Name](copyMap(cc.global), s.shown(cc.local))
					return err
				}, func() bool { return core == nil })
				return core, err
			},
		}
		n.Children = append(n.Children, s.node(cc))
	}
	for _, st := range c.startup {
		co, cn, err := s.makeCoroutine(st.ctx)
		if err != nil {
			return nil, nil, err
		}
		origin := st.ctx.loc
		if origin == (Location{}) {
			origin = st.at
		}
		s.addCoroutine(StartupCoroutine{Name: st.name, Run: co, Local: s.shown(st.ctx.local), Origin: origin})
		n.Children = append(n.Children, cn)
	}
	return srv, n, nil
}

// makeCoroutine creates the coroutine of c.
func (s *Session) makeCoroutine(c *ctx) (Coroutine, *Node, error) {
	var co Coroutine
	if err := s.call(c, func() (err error) {
		co, err = c.dist.Coroutines[c.ref.Name](copyMap(c.global), s.shown(c.local))
		return err
	}, func() bool { return co == nil }); err != nil {
		return nil, nil, err
	}
	return co, s.node(c), nil
}

// collect records the startup coroutines of an application that declares
// them, while a top-level call is creating objects.
func (s *Session) collect(c *ctx, h http.Handler) {
	sp, ok := h.(StartupProvider)
	if !ok || !s.loading {
		return
	}
	cos := sp.Startup()
	names := make([]string, 0, len(cos))
	for name := range cos {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if cos[name] == nil {
			s.warn(c.loc, "", "startup coroutine %q of %s is nil and is skipped", name, c.ref)
			continue
		}
		s.addCoroutine(StartupCoroutine{Name: c.label() + "/" + name, Run: cos[name], Local: s.shown(c.local), Origin: c.loc})
	}
}

// addCoroutine appends sc, making its name unique with "#2", "#3", ...
func (s *Session) addCoroutine(sc StartupCoroutine) {
	taken := func(name string) bool {
		for _, o := range s.Coroutines {
			if o.Name == name {
				return true
			}
		}
		return false
	}
	name := sc.Name
	for i := 2; taken(sc.Name); i++ {
		sc.Name = fmt.Sprintf("%s#%d", name, i)
	}
	s.Coroutines = append(s.Coroutines, sc)
}

// publicFilter turns a filterFunc into a Filter for callers outside the
// loader: a failure when applied is logged and answered with 500.
func (s *Session) publicFilter(f filterFunc) Filter {
	log := s.Logger
	return func(next http.Handler) http.Handler {
		h, err := f(next)
		if err != nil {
			log.Error("applying filter failed", "error", err)
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
			})
		}
		return h
	}
}

// compositeLoader is the Loader a composite factory receives; it must be
// used during the factory call, while the Session is loading. Names are
// sections of the file whose section named the composite's entry point
// (see applyUse), or URIs relative to that file's directory; a composite
// loaded by URI alone resolves names as entry points of its own dist, as
// PasteDeploy's egg loader does. "" is the default object: [app] or
// [app:main] (entry point main). A nil global is the composite's own global
// configuration.
type compositeLoader struct {
	s    *Session
	c    *ctx
	node *Node
}

// App loads and creates an application for the composite.
func (l *compositeLoader) App(name string, global map[string]string) (http.Handler, error) {
	c, err := l.context(KindApp, name, global)
	if err != nil {
		return nil, err
	}
	h, n, err := l.s.makeApp(c)
	if err != nil {
		return nil, err
	}
	l.node.Children = append(l.node.Children, n)
	return h, nil
}

// Filter loads and creates a filter for the composite.
func (l *compositeLoader) Filter(name string, global map[string]string) (Filter, error) {
	c, err := l.context(KindFilter, name, global)
	if err != nil {
		return nil, err
	}
	f, n, err := l.s.makeFilter(c)
	if err != nil {
		return nil, err
	}
	l.node.Children = append(l.node.Children, n)
	return l.s.publicFilter(f), nil
}

// Server loads and creates a server for the composite.
func (l *compositeLoader) Server(name string, global map[string]string) (Server, error) {
	c, err := l.context(KindServer, name, global)
	if err != nil {
		return nil, err
	}
	srv, n, err := l.s.makeServer(c)
	if err != nil {
		return nil, err
	}
	l.node.Children = append(l.node.Children, n)
	return srv, nil
}

func (l *compositeLoader) context(kind Kind, name string, global map[string]string) (*ctx, error) {
	if global == nil {
		global = l.c.global
	}
	global = copyMap(global)
	chain := extend(l.c.chain, l.step(name))
	switch {
	case l.c.loader != nil:
		return l.c.loader.context(kind, name, name == "", global, chain)
	case IsURI(name):
		return l.s.uriContext(kind, name, l.c.dir, global, chain)
	}
	if err := l.s.checkCycle(chain, Location{}); err != nil {
		return nil, err
	}
	return l.s.entryContext(kind, l.c.dist, URI{Scheme: l.c.ref.Scheme, Target: l.c.ref.Target, Name: name}, l.c.dir, global, chain)
}

// step is the reference to name: the composite's local key whose value it
// is, or the composite's section.
func (l *compositeLoader) step(name string) Step {
	for _, k := range l.c.local.Keys() {
		if l.c.local.Get(k) == name {
			return Step{Location: l.c.local.Where(k), Key: k, Value: name}
		}
	}
	at := l.c.loc
	if n := len(l.c.chain); at == (Location{}) && n > 0 {
		at = l.c.chain[n-1].Location
	}
	return Step{Location: at, Key: "loader", Value: name}
}
