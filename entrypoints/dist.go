// Package entrypoints holds the names an INI file can use and what they become.
//
// A Dist (Paste's "egg") is a named set of entry points: apps, composites,
// filters, filter-apps, server factories, server runners and coroutines. The
// same Dist value serves compiled in (Register) and as a plugin binary
// (plugins.Serve), so an app moves between the two without changing.
//
// The loader (LoadApp, LoadFilter, LoadServer, AppConfig and the Session they
// share) reads PasteDeploy INI files and turns sections into values by calling
// the factories of the entry points they name.
//
// # Where paster differs from PasteDeploy
//
// The loader keeps PasteDeploy's semantics, quirks included (a [DEFAULT] key
// shadows a local key of the same name; a use= target's keys are overridden
// by the referrer's), and warns where PasteDeploy is silent. It differs on
// purpose in these cases:
//
//   - A composite's children are looked up in the file of the section whose
//     use names the composite's entry point, where the keys that name them
//     are written. PasteDeploy looks them up in the outermost referrer's
//     file, so a composite reached through config:other.ini#x could not find
//     its own siblings.
//   - Explicit protocol keys (paste.app_factory = …) and call: URIs are
//     refused with an error that says to use use = egg:DIST#NAME.
//   - Errors name the file, line, section and key, the chain of references
//     that led there, and what exists instead; reference cycles are errors,
//     not recursion limits.
//   - A load is bounded: values after substitution total at most
//     Session.MaxExpansion per file, references at most
//     Session.MaxReferences; values of keys named like secrets (IsSecret)
//     are redacted in errors and warnings.
//   - A file's interpolated size is capped (see the loader's errors), and
//     values of keys named like secrets are redacted in errors and logs.
package entrypoints

import (
	"context"
	"net/http"
	"slices"
)

// AppFactory makes an application from its section's configuration.
type AppFactory func(global map[string]string, local Local) (http.Handler, error)

// CompositeFactory makes an application out of other applications, which it
// obtains from l by section name or URI (urlmap, cascade).
type CompositeFactory func(l Loader, global map[string]string, local Local) (http.Handler, error)

// Filter wraps an application in another one.
type Filter func(next http.Handler) http.Handler

// FilterFactory makes a filter from its section's configuration.
type FilterFactory func(global map[string]string, local Local) (Filter, error)

// FilterAppFactory makes an application that wraps next. The loader calls it
// when the filter is applied, once per wrapped application.
type FilterAppFactory func(next http.Handler, global map[string]string, local Local) (http.Handler, error)

// Server serves app until ctx ends or serving fails. It returns nil after a
// clean shutdown.
type Server func(ctx context.Context, app http.Handler) error

// ServerFactory makes a Server from its section's configuration. It should
// validate the configuration and bind nothing: binding happens when the Server
// is called.
type ServerFactory func(global map[string]string, local Local) (Server, error)

// ServerRunner serves app at once with its section's configuration, until ctx
// ends. The loader wraps it into a Server.
type ServerRunner func(ctx context.Context, app http.Handler, global map[string]string, local Local) error

// Coroutine is a long-running background task. It runs until ctx ends and
// returns nil, or returns an error that its supervisor logs and acts on.
type Coroutine func(ctx context.Context) error

// CoroutineFactory makes a Coroutine from its section's configuration.
type CoroutineFactory func(global map[string]string, local Local) (Coroutine, error)

// Core is what a core factory makes: the process's runner.Core (signals,
// sleeping, publish/subscribe), which the command asserts it to be (this
// package cannot name runner's types), and which Close releases.
type Core interface {
	Close() error
}

// CoreFactory makes the Core a [core:NAME] section describes. It validates
// the configuration, naming file, line, section and key on a bad value, and
// may connect to what the Core needs (failing, with the address, when that
// is unreachable); it binds no listening socket.
type CoreFactory func(global map[string]string, local Local) (Core, error)

// StartupProvider is implemented by applications that need background
// coroutines while they serve. The loader collects them when it creates the
// application, before any filter wraps it, so wrapping never hides them
// (Session.Coroutines); the serving engine starts them on the scheduler of
// the configuration generation the application belongs to, and swaps that
// generation in once the required ones are ready.
type StartupProvider interface {
	Startup() map[string]Coroutine
}

// Dist is a named set of entry points: Paste's distribution or egg.
// Maps may be nil. Names are case-sensitive.
type Dist struct {
	Name, Version string
	// Binary is the plugin binary (absolute, symbolic links resolved) whose
	// process serves the dist, set by the plugin host that made it; "" for
	// a dist compiled in. The loader copies it to every Node it makes from
	// the dist, so no later layer has to guess where an entry point runs.
	Binary string

	Apps       map[string]AppFactory
	Composites map[string]CompositeFactory
	Filters    map[string]FilterFactory
	FilterApps map[string]FilterAppFactory
	Servers    map[string]ServerFactory
	Runners    map[string]ServerRunner
	Coroutines map[string]CoroutineFactory
	Cores      map[string]CoreFactory
}

// Kind is what a caller asks the loader for.
type Kind int

// The kinds of object the loader makes.
const (
	KindApp Kind = iota
	KindFilter
	KindServer
	KindCoroutine
	KindCore
)

// kinds describes each Kind: its name in messages and the section prefixes
// the loader searches for it, in groups of aliases (spec §1.2; within a
// group the first alias that matches wins). Indexed by Kind.
var kinds = [...]struct {
	name     string
	sections [][]string
}{
	KindApp:       {"application", [][]string{{"app", "application"}, {"composite", "composit"}, {"pipeline"}, {"filter-app"}}},
	KindFilter:    {"filter", [][]string{{"filter"}}},
	KindServer:    {"server", [][]string{{"server"}}},
	KindCoroutine: {"coroutine", [][]string{{"coroutine"}}},
	KindCore:      {"core", [][]string{{"core"}}},
}

// String returns the kind's name as used in messages: "application",
// "filter", "server", "coroutine", "core".
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kinds) {
		return "unknown"
	}
	return kinds[k].name
}

// Protocol names an entry-point group, after PasteDeploy's protocol names.
type Protocol string

// The entry-point groups, in the order the loader searches them for a kind.
const (
	ProtoApp       Protocol = "paste.app_factory"
	ProtoComposite Protocol = "paste.composite_factory"
	ProtoFilter    Protocol = "paste.filter_factory"
	ProtoFilterApp Protocol = "paste.filter_app_factory"
	ProtoServer    Protocol = "paste.server_factory"
	ProtoRunner    Protocol = "paste.server_runner"
	ProtoCoroutine Protocol = "paster.coroutine_factory"
	ProtoCore      Protocol = "paster.core_factory"
)

// Group describes one entry-point group: one map of a Dist.
type Group struct {
	// Protocol names the group.
	Protocol Protocol
	// Kind is what the loader makes from the group's entry points.
	Kind Kind
	// Label is the group's name in listings (paster points): "apps",
	// "server runners".
	Label string
	// Plugin reports whether a plugin binary serves the group's entry
	// points; a Core is made in the serving process only.
	Plugin bool

	aliases []string // other explicit protocol keys PasteDeploy accepts
	names   func(*Dist) []string
	has     func(*Dist, string) bool
}

// groups is the one table of the entry-point groups, in the order the
// loader searches them within a kind and paster points lists them; the
// functions over kinds and groups (Kind.Protocols, Dist.Names, Dist.Has,
// the loader's explicit protocol keys, the plugin manifest, paster points)
// derive from it.
var groups = []Group{
	group(ProtoApp, KindApp, "apps", true, func(d *Dist) map[string]AppFactory { return d.Apps }),
	group(ProtoComposite, KindApp, "composites", true, func(d *Dist) map[string]CompositeFactory { return d.Composites }, "paste.composit_factory"),
	group(ProtoFilter, KindFilter, "filters", true, func(d *Dist) map[string]FilterFactory { return d.Filters }),
	group(ProtoFilterApp, KindFilter, "filter-apps", true, func(d *Dist) map[string]FilterAppFactory { return d.FilterApps }),
	group(ProtoServer, KindServer, "servers", true, func(d *Dist) map[string]ServerFactory { return d.Servers }),
	group(ProtoRunner, KindServer, "server runners", true, func(d *Dist) map[string]ServerRunner { return d.Runners }),
	group(ProtoCoroutine, KindCoroutine, "coroutines", true, func(d *Dist) map[string]CoroutineFactory { return d.Coroutines }),
	group(ProtoCore, KindCore, "cores", false, func(d *Dist) map[string]CoreFactory { return d.Cores }),
}

// group is a row of groups whose entry points are the map field returns.
func group[F any](p Protocol, k Kind, label string, plugin bool, field func(*Dist) map[string]F, aliases ...string) Group {
	return Group{
		Protocol: p, Kind: k, Label: label, Plugin: plugin, aliases: aliases,
		names: func(d *Dist) []string { return keys(field(d)) },
		has:   func(d *Dist, name string) bool { _, ok := field(d)[name]; return ok },
	}
}

// Groups returns the entry-point groups, in search and listing order.
func Groups() []Group { return slices.Clone(groups) }

// lookupGroup returns the group called p, or nil.
func lookupGroup(p Protocol) *Group {
	for i := range groups {
		if groups[i].Protocol == p {
			return &groups[i]
		}
	}
	return nil
}

// Protocols returns the groups searched for kind, in search order.
func (k Kind) Protocols() []Protocol {
	var out []Protocol
	for _, g := range groups {
		if g.Kind == k {
			out = append(out, g.Protocol)
		}
	}
	return out
}

// protocolKeys returns PasteDeploy's explicit protocol keys for kind (the
// groups' names and their aliases).
func (k Kind) protocolKeys() []string {
	var out []string
	for _, g := range groups {
		if g.Kind == k {
			out = append(append(out, string(g.Protocol)), g.aliases...)
		}
	}
	return out
}

// Names returns the sorted names of the entry points of group p (none for
// a group that does not exist).
func (d *Dist) Names(p Protocol) []string {
	if g := lookupGroup(p); g != nil {
		return g.names(d)
	}
	return nil
}

// Has reports whether group p of the dist has an entry point called name.
func (d *Dist) Has(p Protocol, name string) bool {
	g := lookupGroup(p)
	return g != nil && g.has(d, name)
}

// Loader is what a composite factory uses to obtain the objects it composes.
// Names are section names in the file that defines the composite, or URIs
// (egg:, config:, plugin:) relative to that file's directory. A nil global
// means the composite's own global configuration.
type Loader interface {
	App(nameOrURI string, global map[string]string) (http.Handler, error)
	Filter(nameOrURI string, global map[string]string) (Filter, error)
	Server(nameOrURI string, global map[string]string) (Server, error)
}

// Origin says where a reference to a dist was written, so that a resolver can
// find plugin binaries relative to it and apply the file's [plugins] settings.
type Origin struct {
	Location
	// Plugins is the [plugins] section of the top-level configuration file
	// (nil when it has none): plugin search path and sha256 pins.
	Plugins map[string]string
	// PluginsAt says where each key of Plugins was written, for errors.
	PluginsAt map[string]Location
}

// DistResolver finds dists that are not compiled in; the plugins package
// implements it with plugin binaries. The loader asks the registry first.
type DistResolver interface {
	// Egg returns the dist called name (egg:NAME#...), or an error wrapping
	// ErrNoDist when there is none.
	Egg(name string, from Origin) (*Dist, error)
	// Binary returns the dist served by the executable at path (plugin:PATH#...);
	// a relative path is relative to the directory of from.File.
	Binary(path string, from Origin) (*Dist, error)
}

// DistLister is implemented by a DistResolver that can name the dists it
// would find for a reference written in from (the plugins package: the
// binaries in the plugin path), without starting any. The loader uses the
// names to suggest a near miss for an egg: name nothing has.
type DistLister interface {
	DistNames(from Origin) []string
}
