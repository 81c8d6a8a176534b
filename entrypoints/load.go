package entrypoints

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Session is one load of a configuration: it reads INI files, resolves the
// sections they compose and calls the factories. A server and its app are
// loaded with two calls on the same Session, so that Files, Coroutines and
// Root describe both. A Session is not safe for concurrent use.
//
// Set Registry, Resolver and Logger before the first call; the loader fills
// Files, Coroutines and Root. Paths are absolute everywhere except in the
// key locations of the Local values handed to factories (Local.Where,
// Local.Errorf), which are relative to the base directory of the call when
// the file lies below it, as in the loader's own messages.
type Session struct {
	// Registry holds the compiled-in dists; nil means Default.
	Registry *Registry
	// Resolver finds dists that are not compiled in (plugin binaries) for
	// egg: names missing from Registry, for plugin: URIs and for require.
	// Nil means the registry only; a plugin: URI is then an ErrNoResolver error.
	Resolver DistResolver
	// Logger receives warnings for what PasteDeploy accepts silently (a local
	// key hidden by a global, [app:x] beside [application:x], ...). Nil means
	// no logging.
	Logger hclog.Logger
	// MaxExpansion bounds the values of one INI file after %(name)s
	// substitution: their sizes summed over everything this Session loads
	// from the file, [DEFAULT] included, in bytes. Past it the load fails
	// with an ErrInterpolation error naming the file, line, section and key
	// where the bound was crossed. Zero means DefaultMaxExpansion. (One
	// value is also bounded, to 1 MiB.)
	MaxExpansion int64
	// MaxReferences bounds the references one top-level call follows (use,
	// next, filter-with, pipeline items, startup, a composite's children):
	// composites that each name the next one twice make 2^depth objects.
	// Past it the load fails with an ErrCycle error naming the reference.
	// Zero means DefaultMaxReferences.
	MaxReferences int

	// Files lists the absolute path of every INI file read, in the order
	// first read, without repeats; files that failed to parse are included,
	// so that a watcher can reload once they are fixed.
	Files []string
	// Coroutines lists the startup coroutines of what was loaded, in the
	// order their objects were created: those declared by applications
	// (StartupProvider) and those registered by server sections (startup =).
	// A failed load call adds none.
	Coroutines []StartupCoroutine
	// Core is the Core the last loaded server section names with its core
	// key (core = NAME: a [core:NAME] section or a URI), not yet made; nil
	// when the section has no core key.
	Core *CoreSpec
	// Root holds one composition tree per successful LoadApp, LoadFilter or
	// LoadServer call.
	Root []*Node

	base    string              // base directory of the current call, absolute
	refs    int                 // references followed by the current call
	parsed  map[string]*iniFile // files read by this session, by absolute path
	plugins map[string]string   // [plugins] of the current call's top-level file
	// pluginsAt says where each key of plugins was written.
	pluginsAt map[string]Location
	loading   bool // a top-level call is creating objects
	// closers are the objects created that implement io.Closer, in the
	// order created (own); Close closes them.
	closers []io.Closer
}

// own records v, an object a factory created, for Close if it implements
// io.Closer.
// A composite may return a child as it is, so an object is recorded once;
// one whose type is not comparable cannot be found again and is recorded
// every time (== on it would panic).
func (s *Session) own(v any) {
	c, ok := v.(io.Closer)
	if !ok {
		return
	}
	if reflect.TypeOf(c).Comparable() && slices.Contains(s.closers, c) {
		return
	}
	s.closers = append(s.closers, c)
}

// Close closes, the last created first, every application, composite,
// filter-app and filtered handler this Session created that implements
// io.Closer (a translogger's log file, say), each once, and returns their
// errors joined. Call it once nothing the Session loaded serves any more:
// paster closes a generation's Session when the generation has drained,
// and when a load fails. Servers and coroutines are functions and own
// nothing to close here; plugin instances are released by the host.
func (s *Session) Close() error {
	cs := s.closers
	s.closers = nil
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		errs = append(errs, cs[i].Close())
	}
	return errors.Join(errs...)
}

// StartupCoroutine is a background task of a loaded configuration, which
// the serving engine starts on the scheduler of that configuration's
// generation before the generation serves.
//
// Coroutines registered in a server section (startup = ticker egg:chat#janitor)
// are named by the word written there. Coroutines an application declares
// through StartupProvider are named "SECTION/NAME", SECTION being the section
// header the application was loaded from (app:blog) or its entry point when
// it was loaded by URI. When a name is taken (the same app composed twice),
// "#2", "#3", ... is appended.
type StartupCoroutine struct {
	Name string
	Run  Coroutine
	// Local is the local configuration of the coroutine's section (restart
	// policy keys and the like), or of the application that declared it.
	Local Local
	// Origin is the section that defined the coroutine, or the startup key
	// naming it when it was given as a URI.
	Origin Location
}

// CoreSpec is a server section's core, resolved and checked but not made:
// Make calls its factory, so that the caller decides when (and how often) a
// Core, which may hold connections, is made.
type CoreSpec struct {
	// Name is the core key's value.
	Name string
	// EntryPoint is the factory, as dist#name.
	EntryPoint string
	// Local is the local configuration of the core's section.
	Local Local
	// Global is the global configuration the factory receives.
	Global map[string]string
	// Origin is the [core:NAME] section, or the core key when it is a URI.
	Origin Location
	// Make calls the factory; its error names file, line, section and key.
	Make func() (Core, error)
}

// Config is what AppConfig returns: an application's configuration without
// anything created.
type Config struct {
	Global map[string]string
	Local  Local
	Node   *Node
}

// Values returns Global overlaid with Local (local keys win): the dict
// PasteDeploy's appconfig returns.
func (c *Config) Values() map[string]string {
	m := make(map[string]string, len(c.Global)+c.Local.Len())
	for k, v := range c.Global {
		m[k] = v
	}
	for _, k := range c.Local.Keys() {
		m[k] = c.Local.Get(k)
	}
	return m
}

// LoadApp loads the application that uri names (config:PATH#NAME,
// egg:DIST#NAME or plugin:PATH#NAME; NAME defaults to main) and creates it.
// A relative config: or plugin: path is taken relative to base; global is the
// caller's global configuration, which wins over [DEFAULT] in what factories
// receive. On error nothing is added to Root or Coroutines and the error is
// an *Error naming file, line, section, key and the references followed.
func (s *Session) LoadApp(uri, base string, global map[string]string) (http.Handler, error) {
	c, err := s.begin(KindApp, uri, base, global)
	if err != nil {
		return nil, err
	}
	var h http.Handler
	err = s.create(func() (n *Node, err error) {
		h, n, err = s.makeApp(c)
		return n, err
	})
	return h, err
}

// LoadFilter loads and creates the filter that uri names, as LoadApp does.
// A filter made by a filter-app factory calls the factory each time it is
// applied; if the factory then fails, the error is logged and the returned
// handler answers 500, and startup coroutines of the application it then
// makes are not collected.
func (s *Session) LoadFilter(uri, base string, global map[string]string) (Filter, error) {
	c, err := s.begin(KindFilter, uri, base, global)
	if err != nil {
		return nil, err
	}
	var f filterFunc
	err = s.create(func() (n *Node, err error) {
		f, n, err = s.makeFilter(c)
		return n, err
	})
	if err != nil {
		return nil, err
	}
	return s.publicFilter(f), nil
}

// LoadServer loads and creates the server that uri names, as LoadApp does,
// and the startup coroutines its section registers (startup =), which are
// added to Coroutines.
func (s *Session) LoadServer(uri, base string, global map[string]string) (Server, error) {
	c, err := s.begin(KindServer, uri, base, global)
	if err != nil {
		return nil, err
	}
	var srv Server
	err = s.create(func() (n *Node, err error) {
		srv, n, err = s.makeServer(c)
		return n, err
	})
	return srv, err
}

// AppConfig resolves the application that uri names as LoadApp does, but
// creates nothing: it returns the global and local configuration its factory
// would receive, and the composition tree (without the children a composite
// would load). For a section with filter-with it describes the application,
// not the filter.
func (s *Session) AppConfig(uri, base string, global map[string]string) (*Config, error) {
	c, err := s.begin(KindApp, uri, base, global)
	if err != nil {
		return nil, err
	}
	d := c
	for d.shape == shapeFilterWith {
		d = d.next
	}
	return &Config{Global: copyMap(d.global), Local: d.local, Node: s.skeleton(c)}, nil
}

// LoadApp loads an application with a new Session: the Default registry, no
// plugins, no logging. See Session.LoadApp.
func LoadApp(uri, base string, global map[string]string) (http.Handler, error) {
	return new(Session).LoadApp(uri, base, global)
}

// LoadFilter loads a filter with a new Session. See Session.LoadFilter.
func LoadFilter(uri, base string, global map[string]string) (Filter, error) {
	return new(Session).LoadFilter(uri, base, global)
}

// LoadServer loads a server with a new Session. See Session.LoadServer.
func LoadServer(uri, base string, global map[string]string) (Server, error) {
	return new(Session).LoadServer(uri, base, global)
}

// AppConfig describes an application with a new Session. See Session.AppConfig.
func AppConfig(uri, base string, global map[string]string) (*Config, error) {
	return new(Session).AppConfig(uri, base, global)
}

// begin resolves uri into a context tree: everything is read, interpolated
// and looked up, nothing is created.
func (s *Session) begin(kind Kind, uri, base string, global map[string]string) (*ctx, error) {
	if s.Logger == nil {
		s.Logger = hclog.NewNullLogger()
	}
	if s.Registry == nil {
		s.Registry = Default
	}
	if s.parsed == nil {
		s.parsed = map[string]*iniFile{}
	}
	s.base, s.plugins, s.pluginsAt, s.refs = "", nil, nil, 0
	if base != "" {
		abs, err := filepath.Abs(base)
		if err != nil {
			return nil, fmt.Errorf("entrypoints: base directory %q: %w", base, err)
		}
		s.base = abs
	}
	return s.uriContext(kind, uri, s.base, copyMap(global), nil)
}

// create runs build with coroutine collection on, and records the tree on
// success; on failure it takes back the coroutines it added.
func (s *Session) create(build func() (*Node, error)) error {
	mark := len(s.Coroutines)
	s.loading = true
	n, err := build()
	s.loading = false
	if err != nil {
		s.Coroutines = s.Coroutines[:mark]
		return err
	}
	s.Root = append(s.Root, n)
	return nil
}

// warn logs one of the silent cases of PasteDeploy, naming where it is.
func (s *Session) warn(at Location, key, format string, args ...any) {
	where := relLocation(s.base, at).String()
	if key != "" {
		where = strings.TrimSpace(where + " " + key)
	}
	s.Logger.Warn(where + ": " + fmt.Sprintf(format, args...))
}

// fail makes err (an *Error or a plain cause) an *Error with the chain and
// the base directory of this load. A plain cause is placed at the last step.
func (s *Session) fail(chain []Step, err error) error {
	e, ok := err.(*Error)
	if !ok {
		e = &Error{Err: err}
		if n := len(chain); n > 0 {
			e.Location, e.Key = chain[n-1].Location, chain[n-1].Key
		}
	}
	if e.Chain == nil {
		e.Chain = chain
	}
	e.base = s.base
	return e
}

// failAt is fail with the problem at a given place.
func (s *Session) failAt(chain []Step, at Location, key string, err error) error {
	return s.fail(chain, &Error{Location: at, Key: key, Err: err})
}

// extend returns chain plus st in a new backing array, so that sibling
// references never share steps.
func extend(chain []Step, st Step) []Step {
	out := make([]Step, len(chain), len(chain)+1)
	copy(out, chain)
	return append(out, st)
}

// maxChain bounds the depth of references (a composite that keeps loading
// itself by URI never repeats a section).
const maxChain = 100

// DefaultMaxReferences is the bound on the references one load follows when
// Session.MaxReferences is zero.
const DefaultMaxReferences = 100_000

// checkCycle fails when the section at is already on chain, when chain is
// too deep (at is zero for an entry point loaded by a composite), or when
// this call has followed more references than MaxReferences.
func (s *Session) checkCycle(chain []Step, at Location) error {
	for i, st := range chain {
		if at.Section != "" && st.File == at.File && st.Section == at.Section {
			parts := make([]string, 0, len(chain)-i+1)
			for _, c := range chain[i:] {
				parts = append(parts, fmt.Sprintf("[%s] %s=%s", c.Section, c.Key, c.Value))
			}
			parts = append(parts, "["+at.Section+"]")
			return s.fail(chain, because(ErrCycle, "reference cycle: %s", strings.Join(parts, " → ")))
		}
	}
	if len(chain) > maxChain {
		return s.fail(chain, because(ErrCycle, "references nested more than %d deep", maxChain))
	}
	limit := s.MaxReferences
	if limit <= 0 {
		limit = DefaultMaxReferences
	}
	if s.refs++; s.refs > limit {
		return s.fail(chain, because(ErrCycle, "more than %d references followed in one load: sections that name the same section several times multiply (a composite whose children each name the next composite twice makes 2^depth objects)", limit))
	}
	return nil
}

// commentHash matches a URI whose '#' follows whitespace: most likely an
// attempted inline comment, which INI files do not have.
var commentHash = regexp.MustCompile(`\s#`)

// uriContext resolves a URI written at the end of chain (or given to a
// top-level call when chain is empty); relative paths are relative to dir.
func (s *Session) uriContext(kind Kind, uri, dir string, global map[string]string, chain []Step) (*ctx, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, s.fail(chain, err)
	}
	c, err := s.resolveURI(kind, u, uri, dir, global, chain)
	if err != nil && commentHash.MatchString(uri) {
		if e, ok := err.(*Error); ok && len(e.Chain) == len(chain) {
			e.Err = fmt.Errorf("%w (note: %q is read as the name after '#'; INI files have no inline comments, put the comment on a line of its own)", e.Err, u.Name)
		}
	}
	return c, err
}

func (s *Session) resolveURI(kind Kind, u URI, uri, dir string, global map[string]string, chain []Step) (*ctx, error) {
	var abs string
	if u.Scheme == SchemeConfig || u.Scheme == SchemePlugin {
		abs = u.Target
		if !filepath.IsAbs(abs) {
			if dir == "" {
				return nil, s.fail(chain, because(ErrBadURI, "cannot resolve relative URI %q: no base directory given", uri))
			}
			abs = filepath.Join(dir, abs)
		}
	}
	switch u.Scheme {
	case SchemeConfig:
		f, err := s.read(abs, chain)
		if err != nil {
			return nil, err
		}
		fl := newFileLoader(s, f, global)
		if len(chain) == 0 {
			if err := s.readPlugins(fl); err != nil {
				return nil, err
			}
		}
		name := u.Name
		if name == "" {
			name = "main"
		}
		return fl.context(kind, name, false, global, chain)
	case SchemeEgg:
		d, err := s.egg(u.Target, s.origin(chain))
		if err != nil {
			return nil, s.fail(chain, err)
		}
		return s.entryContext(kind, d, u, dir, global, chain)
	default: // SchemePlugin; ParseURI refuses everything else
		if s.Resolver == nil {
			return nil, s.fail(chain, because(ErrNoResolver, "%s: plugin: URIs need plugin support, and this loader has none", uri))
		}
		d, err := s.Resolver.Binary(abs, s.origin(chain))
		if err != nil {
			return nil, s.fail(chain, err)
		}
		u.Target = abs
		return s.entryContext(kind, d, u, dir, global, chain)
	}
}

// Unused returns the sections of the kinds the loader knows (app, composite,
// pipeline, filter-app, filter, server, coroutine and their aliases) that
// no lookup of this session found, in file order: sections a composition
// defines but does not use, often a misspelt reference's intended target or
// an alternative server. Files that only failed to parse have none.
func (s *Session) Unused() []Location {
	var out []Location
	for _, path := range s.Files {
		f := s.parsed[path]
		if f == nil {
			continue
		}
		for _, sec := range f.sections {
			prefix, _, ok := strings.Cut(sec.name, ":")
			if ok && loadedPrefixes[prefix] && !sec.used {
				out = append(out, relLocation(s.base, Location{File: f.path, Line: sec.line, Section: sec.name}))
			}
		}
	}
	return out
}

// knownPrefixes are the section prefixes the loader searches (kinds), by
// kind; loadedPrefixes holds the same as a set.
var (
	knownPrefixes = func() []string {
		var out []string
		for _, k := range kinds {
			for _, g := range k.sections {
				out = append(out, g...)
			}
		}
		return out
	}()
	loadedPrefixes = func() map[string]bool {
		m := map[string]bool{}
		for _, p := range knownPrefixes {
			m[p] = true
		}
		return m
	}()
)

// suggestPrefix returns a known prefix that p is a near miss of: one of
// want (the prefixes of the kind looked for) if any is, else any known
// prefix; "" when none is near. Prefixes are short, so one edit is near
// whatever the length (Suggest would take "ap" for no misspelling).
func suggestPrefix(p string, want []string) string {
	for _, cands := range [][]string{want, knownPrefixes} {
		best, bestDist := "", max(1, len(p)/3)+1
		for _, c := range cands {
			if d := editDistance(strings.ToLower(p), c); d < bestDist {
				best, bestDist = c, d
			}
		}
		if best != "" {
			return best
		}
	}
	return ""
}

// warnPrefixes warns about the sections of f whose prefix the loader does
// not know ([ap:hello]): nothing can load them, and a misspelt prefix is
// otherwise only found when a lookup of the name fails. Sections without a
// prefix ([plugins], other tools' [loggers]) are not the loader's concern.
func (s *Session) warnPrefixes(f *iniFile) {
	for _, sec := range f.sections {
		p, _, ok := strings.Cut(sec.name, ":")
		if !ok || loadedPrefixes[p] {
			continue
		}
		msg := fmt.Sprintf("section not loadable: prefix %q is not one the loader knows (%s)", p, strings.Join(knownPrefixes, ", "))
		if sug := suggestPrefix(p, nil); sug != "" {
			msg += fmt.Sprintf("; did you mean %q?", sug)
		}
		s.warn(Location{File: f.path, Line: sec.line, Section: sec.name}, "", "%s", msg)
	}
}

// read returns the parsed file at path, reading it once per session.
func (s *Session) read(path string, chain []Step) (*iniFile, error) {
	path = filepath.Clean(path)
	if f, ok := s.parsed[path]; ok {
		return f, nil
	}
	// Only regular files: a config: URI naming /dev/zero or a FIFO must not
	// hang the loader.
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, s.fail(chain, fmt.Errorf("reading config: %s is not a regular file", path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, s.fail(chain, fmt.Errorf("reading config: %w", err))
	}
	seen := false
	for _, f := range s.Files {
		seen = seen || f == path
	}
	if !seen {
		s.Files = append(s.Files, path)
	}
	f, err := parseINI(path, data)
	if err != nil {
		return nil, s.fail(chain, err)
	}
	f.budget = &budget{limit: s.MaxExpansion}
	if f.budget.limit <= 0 {
		f.budget.limit = DefaultMaxExpansion
	}
	s.parsed[path] = f
	s.warnPrefixes(f)
	return f, nil
}

// readPlugins keeps the [plugins] section of the top-level file for Origin.
func (s *Session) readPlugins(fl *fileLoader) error {
	sec := fl.f.byName["plugins"]
	if sec == nil {
		return nil
	}
	sc := scope{section: sec, defaults: fl.defaults, budget: fl.f.budget}
	s.plugins, s.pluginsAt = map[string]string{}, map[string]Location{}
	for _, k := range sec.keys {
		at := Location{File: fl.f.path, Line: k.line, Section: sec.name}
		v, err := sc.interpolate(at, k.name, k.value)
		if err != nil {
			return s.fail(nil, err)
		}
		s.plugins[k.name], s.pluginsAt[k.name] = v, at
	}
	return nil
}

// origin says where the reference at the end of chain was written.
func (s *Session) origin(chain []Step) Origin {
	o := Origin{Plugins: s.plugins, PluginsAt: s.pluginsAt}
	if n := len(chain); n > 0 {
		o.Location = chain[n-1].Location
	}
	return o
}

// egg finds a dist by name: compiled in (exactly, then under PEP 503
// normalisation as importlib.metadata does: case, '-', '_' and '.' do not
// matter), then through the Resolver. When none has it, the error suggests
// a near miss among the compiled-in dists and those the Resolver lists
// (DistLister).
func (s *Session) egg(name string, from Origin) (*Dist, error) {
	if d := s.Registry.Dist(name); d != nil {
		return d, nil
	}
	var names []string
	for _, d := range s.Registry.Dists() {
		if normalizeDist(d.Name) == normalizeDist(name) {
			return d, nil
		}
		names = append(names, d.Name)
	}
	msg := fmt.Sprintf("dist %q not found (compiled in: %s)", name, listOrNone(names))
	if s.Resolver != nil {
		d, err := s.Resolver.Egg(name, from)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, ErrNoDist) {
			// A binary was found but could not be started: that is the
			// error, with its own kind (checksum, protocol, timeout).
			return nil, fmt.Errorf("dist %q: %w", name, err)
		}
		// The resolver's reason (where it looked), without the sentinel's
		// text, which would say "not found" a second time.
		msg += "; " + strings.TrimPrefix(err.Error(), ErrNoDist.Error()+": ")
		if l, ok := s.Resolver.(DistLister); ok {
			names = append(names, l.DistNames(from)...)
		}
	}
	if sug := Suggest(name, names); sug != "" {
		msg += fmt.Sprintf("; did you mean %q?", sug)
	}
	return nil, because(ErrNoDist, "%s", msg)
}

var distSeparators = regexp.MustCompile(`[-_.]+`)

func normalizeDist(name string) string {
	return distSeparators.ReplaceAllString(strings.ToLower(name), "-")
}

// entryContext is the context of entry point u.Name (default main) of d for
// kind. dir is where a composite made from it resolves URIs when no file
// defines it.
func (s *Session) entryContext(kind Kind, d *Dist, u URI, dir string, global map[string]string, chain []Step) (*ctx, error) {
	if u.Name == "" {
		u.Name = "main"
	}
	p, err := d.Find(kind, u.Name)
	if err != nil {
		return nil, s.fail(chain, err)
	}
	return &ctx{kind: kind, shape: shapeEntry, global: copyMap(global), chain: chain,
		dist: d, proto: p, ref: u, dir: dir}, nil
}

// fileLoader resolves names in one INI file for one reference to it: the
// file's defaults include the globals of whoever opened it (spec §1.1).
type fileLoader struct {
	s        *Session
	f        *iniFile
	dir      string
	defaults map[string]value
	order    []string // keys of defaults: here, __file__, [DEFAULT], merged globals
	interp   map[string]string
	err      error
}

func newFileLoader(s *Session, f *iniFile, global map[string]string) *fileLoader {
	fl := &fileLoader{s: s, f: f, dir: filepath.Dir(f.path), defaults: map[string]value{}}
	add := func(k string, v value) {
		if _, ok := fl.defaults[k]; !ok {
			fl.order = append(fl.order, k)
		}
		fl.defaults[k] = v
	}
	add("here", value{text: fl.dir, literal: true})
	add("__file__", value{text: f.path, literal: true})
	if f.defaults != nil {
		for _, k := range f.defaults.keys {
			add(k.name, value{text: k.value, line: k.line})
		}
	}
	for _, k := range keys(global) {
		if _, ok := fl.defaults[k]; !ok {
			add(k, value{text: global[k], literal: true})
		}
	}
	return fl
}

// interpolatedDefaults returns the defaults with [DEFAULT] values
// interpolated, as PasteDeploy computes them on every lookup: a broken
// [DEFAULT] value fails every load from the file.
func (fl *fileLoader) interpolatedDefaults() (map[string]string, error) {
	if fl.interp != nil || fl.err != nil {
		return fl.interp, fl.err
	}
	out := make(map[string]string, len(fl.order))
	sc := scope{defaults: fl.defaults, budget: fl.f.budget}
	for _, k := range fl.order {
		v := fl.defaults[k]
		if v.literal {
			out[k] = v.text
			continue
		}
		x, err := sc.interpolate(Location{File: fl.f.path, Line: v.line, Section: defaultSection}, k, v.text)
		if err != nil {
			fl.err = err
			return nil, err
		}
		out[k] = x
	}
	fl.interp = out
	return out, nil
}

// match returns the sections [prefix:name] (name compared after trimming the
// header's name part), in file order; with bare, the lookup name is absent,
// so [prefix] and [prefix:main] match.
func (fl *fileLoader) match(prefix, name string, bare bool) []*iniSection {
	out := fl.f.byRef[prefix+":"+name]
	if sec := fl.f.byName[prefix]; bare && sec != nil {
		out = append([]*iniSection{sec}, out...)
		sort.SliceStable(out, func(i, j int) bool { return out[i].line < out[j].line })
	}
	return out
}

// find returns the one section of kind called name.
func (fl *fileLoader) find(kind Kind, name string, bare bool, chain []Step) (*iniSection, error) {
	s := fl.s
	lookup := name
	if bare {
		lookup = "main"
	}
	var found []*iniSection
	var prefixes []string
	for _, group := range kinds[kind].sections {
		prefixes = append(prefixes, group...)
		for i, prefix := range group {
			m := fl.match(prefix, lookup, bare)
			if len(m) == 0 {
				continue
			}
			found = append(found, m...)
			for _, alias := range group[i+1:] {
				for _, other := range fl.match(alias, lookup, bare) {
					s.warn(Location{File: fl.f.path, Line: other.line, Section: other.name}, "",
						"section ignored: [%s] at line %d has the same name and wins", m[0].name, m[0].line)
				}
			}
			break
		}
	}
	where := relLocation(s.base, Location{File: fl.f.path}).File
	switch {
	case len(found) == 1:
		found[0].used = true
		return found[0], nil
	case len(found) > 1:
		var names []string
		for _, sec := range found {
			names = append(names, fmt.Sprintf("[%s] (line %d)", sec.name, sec.line))
		}
		return nil, s.fail(chain, because(ErrAmbiguousSection, "%s name %q is ambiguous in %s: %s all match; rename all but one",
			kind, lookup, where, strings.Join(names, ", ")))
	}
	var have, haveNames, elsewhere []string
	for _, sec := range fl.f.sections {
		p, n, ok := strings.Cut(sec.name, ":")
		if !ok {
			continue
		}
		n = strings.TrimSpace(n)
		switch {
		case slices.Contains(prefixes, p):
			have = append(have, "["+sec.name+"]")
			haveNames = append(haveNames, n)
		case n != lookup:
		case loadedPrefixes[p]:
			elsewhere = append(elsewhere, fmt.Sprintf("[%s] is not a section of kind %s", sec.name, kind))
		case slices.ContainsFunc(prefixes, func(q string) bool { return strings.EqualFold(p, q) }):
			elsewhere = append(elsewhere, fmt.Sprintf("[%s] does not count: prefixes are case-sensitive", sec.name))
		default:
			note := fmt.Sprintf("[%s] has the name, but its prefix %q is not one the loader knows", sec.name, p)
			if sug := suggestPrefix(p, prefixes); sug != "" {
				note += fmt.Sprintf("; did you mean [%s:%s]?", sug, n)
			}
			elsewhere = append(elsewhere, note)
		}
	}
	msg := fmt.Sprintf("no %s section %q (prefixed by %s) in %s; it has %s", kind, lookup, strings.Join(prefixes, ", "), where, listOrNone(have))
	if sug := Suggest(lookup, haveNames); sug != "" {
		msg += fmt.Sprintf("; did you mean %q?", sug)
	}
	if len(elsewhere) > 0 {
		msg += "; " + strings.Join(elsewhere, "; ")
	}
	return nil, s.fail(chain, because(ErrNoSection, "%s", msg))
}

// getKey is a remembered "get LOCAL = GLOBAL" line.
type getKey struct {
	local, global string
	at            Location
}

// context builds the context of the section of kind called name (spec §1.5),
// or of the URI name. bare means the name is absent (a composite asking for
// its loader's default app).
func (fl *fileLoader) context(kind Kind, name string, bare bool, gin map[string]string, chain []Step) (*ctx, error) {
	s := fl.s
	if !bare && IsURI(name) {
		return s.uriContext(kind, name, fl.dir, gin, chain)
	}
	sec, err := fl.find(kind, name, bare, chain)
	if err != nil {
		return nil, err
	}
	secLoc := Location{File: fl.f.path, Line: sec.line, Section: sec.name}
	if err := s.checkCycle(chain, secLoc); err != nil {
		return nil, err
	}
	defaults, err := fl.interpolatedDefaults()
	if err != nil {
		return nil, s.fail(chain, err)
	}
	global := copyMap(defaults)
	for k, v := range gin {
		global[k] = v
	}
	var (
		local     Local
		additions = map[string]string{}
		gets      []getKey
		hidden    []Shadow
		sc        = scope{section: sec, defaults: fl.defaults, budget: fl.f.budget}
	)
	visit := func(key, raw string, at Location, own bool) error {
		switch {
		case strings.HasPrefix(key, "set "):
			v, err := sc.interpolate(at, key, raw)
			if err != nil {
				return err
			}
			n := strings.TrimSpace(key[4:])
			global[n], additions[n] = v, v
		case strings.HasPrefix(key, "get "):
			v, err := sc.interpolate(at, key, raw)
			if err != nil {
				return err
			}
			gets = append(gets, getKey{local: strings.TrimSpace(key[4:]), global: v, at: at})
		default:
			if d, shadowed := fl.defaults[key]; shadowed {
				if own {
					fl.warnShadowed(kind, at, key, raw, d)
					hidden = append(hidden, Shadow{Key: key, Value: raw, At: at})
				}
				return nil
			}
			v, err := sc.interpolate(at, key, raw)
			if err != nil {
				return err
			}
			local.set(key, v, at) // local is not shared until the loop ends
		}
		return nil
	}
	// configparser's options(): the section's keys, then the defaults it
	// does not define itself.
	for _, k := range sec.keys {
		if err := visit(k.name, k.value, Location{File: fl.f.path, Line: k.line, Section: sec.name}, true); err != nil {
			return nil, s.fail(chain, err)
		}
	}
	for _, k := range fl.order {
		if sec.index[k] != nil {
			continue
		}
		d := fl.defaults[k]
		at := Location{File: fl.f.path, Line: d.line, Section: defaultSection}
		if d.literal {
			at = secLoc
		}
		if err := visit(k, d.text, at, false); err != nil {
			return nil, s.fail(chain, err)
		}
	}
	for _, g := range gets {
		v, ok := global[g.global]
		if !ok {
			msg := fmt.Sprintf("get %s = %s: no global %q", g.local, Redact(g.local, g.global), Redact(g.local, g.global))
			if sug := Suggest(g.global, keys(global)); sug != "" {
				msg += fmt.Sprintf("; did you mean %q?", sug)
			}
			return nil, s.failAt(chain, g.at, "get "+g.local, because(ErrNoGlobal, "%s", msg))
		}
		local.set(g.local, v, g.at)
	}
	// The rule holds (the keys stay out of local), but the factory can
	// learn what was hidden, and by what: server runners use the global.
	for _, sh := range hidden {
		sh.Global = global[sh.Key]
		local.shadow(sh)
	}

	var filterWith, startup, core *Step
	pop := func(key string) *Step {
		v, ok := local.Lookup(key)
		if !ok {
			return nil
		}
		st := &Step{Location: local.Where(key), Key: key, Value: v}
		local = local.Without(key)
		return st
	}
	switch kind {
	case KindApp, KindFilter:
		filterWith = pop("filter-with")
	case KindServer:
		startup = pop("startup")
		core = pop("core")
		if _, ok := local.Lookup("filter-with"); ok {
			s.warn(local.Where("filter-with"), "filter-with", "a server section cannot be filtered; the key is passed to the server factory as an ordinary key")
		}
	}
	if req := pop("require"); req != nil {
		for _, name := range strings.Fields(req.Value) {
			if _, err := s.egg(name, s.origin(extend(chain, *req))); err != nil {
				return nil, s.failAt(chain, req.Location, req.Key, err)
			}
		}
	}

	var c *ctx
	switch {
	case strings.HasPrefix(sec.name, "filter-app:"):
		c, err = fl.filterApp(secLoc, local, global, additions, chain)
	case strings.HasPrefix(sec.name, "pipeline:"):
		c, err = fl.pipeline(secLoc, local, global, chain)
	default:
		c, err = fl.leaf(kind, secLoc, local, global, additions, chain)
	}
	if err != nil {
		return nil, err
	}
	if startup != nil {
		for _, n := range strings.Fields(startup.Value) {
			st := *startup
			st.Value = n
			cc, err := fl.context(KindCoroutine, n, false, global, extend(chain, st))
			if err != nil {
				return nil, err
			}
			c.startup = append(c.startup, startupCtx{name: n, at: st.Location, ctx: cc})
		}
	}
	if core != nil {
		cc, err := fl.context(KindCore, core.Value, false, global, extend(chain, *core))
		if err != nil {
			return nil, err
		}
		c.core = &startupCtx{name: core.Value, at: core.Location, ctx: cc}
	}
	if filterWith != nil {
		f, err := fl.context(KindFilter, filterWith.Value, false, global, extend(chain, *filterWith))
		if err != nil {
			return nil, err
		}
		c = &ctx{kind: kind, shape: shapeFilterWith, global: global, local: local.Without("use").Without("next"), loc: secLoc, chain: chain, filter: f, next: c}
	}
	return c, nil
}

func (fl *fileLoader) warnShadowed(kind Kind, at Location, key, raw string, d value) {
	var from string
	switch {
	case !d.literal:
		from = fmt.Sprintf("set in [DEFAULT] at line %d", d.line)
	case key == "here" || key == "__file__":
		from = "defined for every file"
	default:
		from = "given by the caller or by the file that refers to this one"
	}
	if kind == KindServer {
		// paster's server runners take their settings from the global
		// (runner.Unshadow): "paster serve dev.ini port=9000" is meant.
		fl.s.warn(at, key, "local value %q is hidden: %s is a global (%s), and a global hides a local key of the same name; server runners built on paster's runner use the global's value",
			Redact(key, raw), key, from)
		return
	}
	fl.s.warn(at, key, "local value %q is ignored: %s is a global (%s), and a global hides a local key of the same name; write \"set %s = ...\" to change the global, or \"get %s = OTHER\" to read another global",
		Redact(key, raw), key, from, key, key)
}

// leaf builds a section that names its factory: with use (a section of the
// same kind in this file, or a URI; spec §1.6), or with an explicit protocol
// key.
//
// Explicit protocol keys (paste.app_factory = pkg.mod:make_app) name Python
// objects by import path. Go cannot import by name, and every factory is an
// entry point of a dist anyway, so such a key is an ErrProtocolKey error that
// says which use line to write instead. Beside a use key, it is an ordinary
// local key as in PasteDeploy (with a warning).
func (fl *fileLoader) leaf(kind Kind, secLoc Location, local Local, global, additions map[string]string, chain []Step) (*ctx, error) {
	s := fl.s
	var protos []string
	for _, k := range kind.protocolKeys() {
		if _, ok := local.Lookup(k); ok {
			protos = append(protos, k)
		}
	}
	use, ok := local.Lookup("use")
	if !ok {
		if len(protos) > 0 {
			return nil, s.failAt(chain, local.Where(protos[0]), protos[0], because(ErrProtocolKey,
				"explicit protocol keys (%s) name Python objects and mean nothing to paster; name the factory with use = egg:DIST#NAME (a compiled-in or plugin dist) or plugin:PATH#NAME",
				strings.Join(protos, ", ")))
		}
		return nil, s.failAt(chain, secLoc, "", because(ErrNoLoader,
			"no loader given in [%s]: add use = egg:DIST#NAME, use = SECTION, or use = config:FILE#NAME", secLoc.Section))
	}
	for _, k := range protos {
		s.warn(local.Where(k), k, "ignored as a protocol: use decides the factory; the key is passed to it as an ordinary key")
	}
	st := Step{Location: local.Where("use"), Key: "use", Value: use}
	local = local.Without("use")
	c, err := fl.context(kind, use, false, global, extend(chain, st))
	if err != nil {
		return nil, err
	}
	c.applyUse(fl, secLoc, additions, local, global)
	return c, nil
}

// applyUse puts the referrer's configuration on top of the context its use
// key produced (spec §1.6 steps 2-5). The referrer's set lines win over the
// target's, and __file__ stays the referrer's. On an entry point the
// referrer's local keys win over the target's.
//
// When the target is a composition (filter-with, pipeline, filter-app),
// PasteDeploy merges the referrer's local keys into a wrapper that ignores
// them. That is kept, with a warning, since moving them to some part of the
// composition would be a guess; the referrer's set lines reach every part.
//
// A composite resolves the names it loads in the file of the section whose
// use names the composite's entry point, not in the outermost referrer's
// file as PasteDeploy does (spec §1.6 quirk, §6.2.5): the keys that name
// children are written there.
func (c *ctx) applyUse(fl *fileLoader, from Location, additions map[string]string, local Local, global map[string]string) {
	file, hasFile := global["__file__"]
	c.walk(func(d *ctx) {
		for k, v := range additions {
			d.global[k] = v
		}
		if hasFile {
			d.global["__file__"] = file
		}
	})
	if c.shape == shapeEntry {
		merged := c.local.clone(local.Len())
		for _, k := range local.keys {
			merged.set(k, local.values[k], local.where[k])
		}
		for _, sh := range local.shadows {
			merged.shadow(sh)
		}
		c.local = merged
		if c.loader == nil && c.proto == ProtoComposite {
			c.loader = fl
		}
	} else if local.Len() > 0 {
		fl.s.warn(from, "", "keys %s are dropped: [%s] is a %s, whose parts take their configuration from their own sections",
			strings.Join(local.Keys(), ", "), c.loc.Section, c.entryPoint())
	}
	if c.loc != (Location{}) {
		c.via = append([]Location{c.loc}, c.via...)
	}
	c.loc = from
}

// pipeline builds a [pipeline:] section (spec §1.8).
func (fl *fileLoader) pipeline(secLoc Location, local Local, global map[string]string, chain []Step) (*ctx, error) {
	s := fl.s
	v, ok := local.Lookup("pipeline")
	if !ok {
		return nil, s.failAt(chain, secLoc, "", because(ErrMissingKey, "[%s] has no pipeline key; write pipeline = FILTER ... APP", secLoc.Section))
	}
	at := local.Where("pipeline")
	local = local.Without("pipeline")
	if local.Len() > 0 {
		first := local.Keys()[0]
		return nil, s.failAt(chain, local.Where(first), first, because(ErrBadPipeline,
			"a pipeline section takes only pipeline (and set, filter-with, require); it has %s", strings.Join(local.Keys(), ", ")))
	}
	items := strings.Fields(v)
	if len(items) == 0 {
		return nil, s.failAt(chain, at, "pipeline", because(ErrBadPipeline, "pipeline is empty; list the filters, outermost first, then the application"))
	}
	step := func(item string) []Step { return extend(chain, Step{Location: at, Key: "pipeline", Value: item}) }
	app, err := fl.context(KindApp, items[len(items)-1], false, global, step(items[len(items)-1]))
	if err != nil {
		return nil, err
	}
	c := &ctx{kind: KindApp, shape: shapePipeline, global: global, loc: secLoc, chain: chain, next: app}
	for _, item := range items[:len(items)-1] {
		f, err := fl.context(KindFilter, item, false, global, step(item))
		if err != nil {
			return nil, err
		}
		c.filters = append(c.filters, f)
	}
	return c, nil
}

// filterApp builds a [filter-app:] section: a filter (use or explicit keys,
// as a [filter:] section) applied to the application next (spec §1.9).
func (fl *fileLoader) filterApp(secLoc Location, local Local, global, additions map[string]string, chain []Step) (*ctx, error) {
	s := fl.s
	v, ok := local.Lookup("next")
	if !ok {
		return nil, s.failAt(chain, secLoc, "", because(ErrMissingKey, "[%s] has no next key; write next = APP (the application the filter wraps)", secLoc.Section))
	}
	st := Step{Location: local.Where("next"), Key: "next", Value: v}
	local = local.Without("next")
	next, err := fl.context(KindApp, v, false, global, extend(chain, st))
	if err != nil {
		return nil, err
	}
	f, err := fl.leaf(KindFilter, secLoc, local, global, additions, chain)
	if err != nil {
		return nil, err
	}
	return &ctx{kind: KindApp, shape: shapeFilterApp, global: global, local: local.Without("use"), loc: secLoc, chain: chain, filter: f, next: next}, nil
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
