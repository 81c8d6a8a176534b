package plugins

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner/observe"
)

// remoteDist is the Dist the host hands to the loader for a plugin: every
// factory creates an instance inside the plugin process, owned by scope s
// (nil: by nobody; see Scope).
func (p *proc) remoteDist(m wire.Manifest, s *Scope) *entrypoints.Dist {
	d := &entrypoints.Dist{Name: m.Name, Version: m.Version, Binary: p.path}
	spec := func(proto entrypoints.Protocol, name string, global map[string]string, local entrypoints.Local) *wire.CreateRequest {
		return &wire.CreateRequest{Proto: proto, Name: name, Global: global, Local: wire.FromLocal(local), Shadows: wire.FromShadows(local)}
	}
	for _, name := range m.Entries[entrypoints.ProtoApp] {
		if d.Apps == nil {
			d.Apps = map[string]entrypoints.AppFactory{}
		}
		d.Apps[name] = func(global map[string]string, local entrypoints.Local) (http.Handler, error) {
			return p.newApp(s, spec(entrypoints.ProtoApp, name, global, local))
		}
	}
	for _, name := range m.Entries[entrypoints.ProtoComposite] {
		if d.Composites == nil {
			d.Composites = map[string]entrypoints.CompositeFactory{}
		}
		d.Composites[name] = func(l entrypoints.Loader, global map[string]string, local entrypoints.Local) (http.Handler, error) {
			req := spec(entrypoints.ProtoComposite, name, global, local)
			req.Loader = p.h.refs.addLoader(l)
			return p.newApp(s, req)
		}
	}
	for _, name := range m.Entries[entrypoints.ProtoFilterApp] {
		if d.FilterApps == nil {
			d.FilterApps = map[string]entrypoints.FilterAppFactory{}
		}
		d.FilterApps[name] = func(next http.Handler, global map[string]string, local entrypoints.Local) (http.Handler, error) {
			req := spec(entrypoints.ProtoFilterApp, name, global, local)
			req.Next = p.ref(next)
			return p.newApp(s, req)
		}
	}
	for _, name := range m.Entries[entrypoints.ProtoFilter] {
		if d.Filters == nil {
			d.Filters = map[string]entrypoints.FilterFactory{}
		}
		d.Filters[name] = func(global map[string]string, local entrypoints.Local) (entrypoints.Filter, error) {
			fid, _, err := s.create(p, spec(entrypoints.ProtoFilter, name, global, local))
			if err != nil {
				return nil, err
			}
			return func(next http.Handler) http.Handler {
				h, err := p.newApp(s, &wire.CreateRequest{Proto: wire.ProtoApply, Name: name, Filter: fid, Next: p.ref(next)})
				if err != nil {
					p.log.Error("applying filter failed", "filter", name, "error", err)
					return failedApp{err}
				}
				return h
			}, nil
		}
	}
	for _, name := range m.Entries[entrypoints.ProtoServer] {
		if d.Servers == nil {
			d.Servers = map[string]entrypoints.ServerFactory{}
		}
		d.Servers[name] = func(global map[string]string, local entrypoints.Local) (entrypoints.Server, error) {
			id, _, err := s.create(p, spec(entrypoints.ProtoServer, name, global, local))
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context, app http.Handler) error {
				return p.serveLent(ctx, wire.RunRequest{ID: id, App: p.ref(app)})
			}, nil
		}
	}
	for _, name := range m.Entries[entrypoints.ProtoRunner] {
		if d.Runners == nil {
			d.Runners = map[string]entrypoints.ServerRunner{}
		}
		d.Runners[name] = func(ctx context.Context, app http.Handler, global map[string]string, local entrypoints.Local) error {
			id, _, err := s.create(p, spec(entrypoints.ProtoRunner, name, global, local))
			if err != nil {
				return err
			}
			return p.serveLent(ctx, wire.RunRequest{ID: id, App: p.ref(app)})
		}
	}
	for _, name := range m.Entries[entrypoints.ProtoCoroutine] {
		if d.Coroutines == nil {
			d.Coroutines = map[string]entrypoints.CoroutineFactory{}
		}
		d.Coroutines[name] = func(global map[string]string, local entrypoints.Local) (entrypoints.Coroutine, error) {
			id, _, err := s.create(p, spec(entrypoints.ProtoCoroutine, name, global, local))
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return p.run(ctx, wire.RunRequest{ID: id}) }, nil
		}
	}
	return d
}

func (p *proc) newApp(s *Scope, req *wire.CreateRequest) (http.Handler, error) {
	id, resp, err := s.create(p, req)
	if err != nil {
		return nil, err
	}
	a := &remoteApp{p: p, id: id}
	if len(resp.Startup) == 0 {
		return a, nil
	}
	return &remoteStartupApp{a, resp.Startup}, nil
}

// remoteApp is an app instance inside a plugin process.
type remoteApp struct {
	p  *proc
	id uint64
}

func (a *remoteApp) remote() (*proc, uint64) { return a.p, a.id }

// ServeHTTP forwards the request to the instance. While the plugin restarts
// (also during a crash loop's cooldown) it answers 503 with Retry-After set
// to the seconds until the next start attempt; when the plugin dies before answering,
// 502; after the response began, the response is aborted. Each request
// handed to the plugin is measured in the observe.Registry of its context
// (observe.Hop: the hop's latency and body bytes, by dist).
func (a *remoteApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	procsRequest()
	a.p.h.adoptCore(r.Context())
	g, st := a.p.acquire()
	if g == nil {
		if st.waiting() {
			w.Header().Set("Retry-After", strconv.Itoa(a.p.retryAfter()))
		}
		http.Error(w, "Service Unavailable: plugin "+a.p.name+" is "+st.String(), http.StatusServiceUnavailable)
		return
	}
	hop := observe.StartHop(r.Context(), a.p.name)
	defer hop.End()
	w = hop.Writer(w)
	if n, ok := transport.WholeBody(r.Body); ok {
		hop.Sent(n) // passed on as it is: Forward's one-frame path stays
	} else {
		r = hop.Body(r)
	}
	open, done := a.p.h.requestScope(r, g.http)
	err := transport.Forward(w, r, open, a.id)
	done()
	a.p.release()
	switch {
	case err == nil:
	case errors.Is(err, transport.ErrNoResponse):
		if !errors.Is(err, transport.ErrClientGone) {
			a.p.log.Warn("plugin did not answer", "method", r.Method, "uri", r.RequestURI, "error", err)
			http.Error(w, "Bad Gateway: plugin "+a.p.name+" did not answer", http.StatusBadGateway)
		}
	default:
		panic(http.ErrAbortHandler)
	}
}

// remoteStartupApp is a remote app that declares startup coroutines.
type remoteStartupApp struct {
	*remoteApp
	names []string
}

// Startup returns coroutines that run the app's startup coroutines inside
// the plugin.
func (a *remoteStartupApp) Startup() map[string]entrypoints.Coroutine {
	out := make(map[string]entrypoints.Coroutine, len(a.names))
	for _, n := range a.names {
		out[n] = func(ctx context.Context) error {
			return a.p.run(ctx, wire.RunRequest{ID: a.id, Startup: n})
		}
	}
	return out
}

// failedApp answers 500 for a filter that could not be applied (Filter has
// no error result).
type failedApp struct{ err error }

func (f failedApp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "Internal Server Error: "+f.err.Error(), http.StatusInternalServerError)
}
