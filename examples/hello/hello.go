// Package hello is an example dist with one entry point of every kind. It
// is compiled into paster and also builds to the plugin binary
// paster-plugin-hello (cmd/paster-plugin-hello), so the same code serves
// in-process and from a plugin process.
//
//	[app:main]
//	use = egg:hello#main
//	greeting = Hello
//	name = world
package hello

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// Dist is the hello distribution:
//
//   - app main: answers "GREETING, NAME!" (local keys greeting, name);
//   - filter stamp: adds the response header X-Stamp: VALUE (key value);
//   - filter-app prefix: writes the text of key text before the app's output;
//   - composite urlmap: each local key "/path = section-or-URI" mounts an app;
//   - server http: serves on key listen ("host:port" or "unix:/path");
//   - runner http-runner: the same, as a server runner;
//   - coroutine ticker: logs "tick" every interval (default 1s).
var Dist = &entrypoints.Dist{
	Name:    "hello",
	Version: "0.1.0",
	Apps:    map[string]entrypoints.AppFactory{"main": newApp},
	Filters: map[string]entrypoints.FilterFactory{"stamp": newStamp},
	FilterApps: map[string]entrypoints.FilterAppFactory{
		"prefix": newPrefix,
	},
	Composites: map[string]entrypoints.CompositeFactory{"urlmap": newURLMap},
	Servers:    map[string]entrypoints.ServerFactory{"http": newServer},
	Runners:    map[string]entrypoints.ServerRunner{"http-runner": runServer},
	Coroutines: map[string]entrypoints.CoroutineFactory{"ticker": newTicker},
}

func newApp(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	greeting, name := local.Get("greeting"), local.Get("name")
	if greeting == "" {
		greeting = "Hello"
	}
	if name == "" {
		name = "world"
	}
	body := []byte(greeting + ", " + name + "!\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(body)
	}), nil
}

func newStamp(_ map[string]string, local entrypoints.Local) (entrypoints.Filter, error) {
	v := local.Get("value")
	if v == "" {
		return nil, errors.New("stamp: key value is required")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("X-Stamp", v)
			next.ServeHTTP(w, r)
		})
	}, nil
}

func newPrefix(next http.Handler, _ map[string]string, local entrypoints.Local) (http.Handler, error) {
	text := local.Get("text")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(text))
		next.ServeHTTP(w, r)
	}), nil
}

func newURLMap(l entrypoints.Loader, global map[string]string, local entrypoints.Local) (http.Handler, error) {
	mux := http.NewServeMux()
	paths := local.Keys()
	sort.Strings(paths)
	for _, path := range paths {
		if !strings.HasPrefix(path, "/") {
			continue
		}
		app, err := l.App(local.Get(path), nil)
		if err != nil {
			return nil, local.Errorf(path, "%w", err)
		}
		prefix := strings.TrimSuffix(path, "/")
		mux.Handle(prefix+"/", http.StripPrefix(prefix, app))
	}
	return mux, nil
}

func listen(local entrypoints.Local) (net.Listener, error) {
	addr := local.Get("listen")
	if addr == "" {
		return nil, errors.New("key listen is required")
	}
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", addr)
}

func serve(ctx context.Context, ln net.Listener, app http.Handler) error {
	srv := &http.Server{Handler: app, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func newServer(_ map[string]string, local entrypoints.Local) (entrypoints.Server, error) {
	if local.Get("listen") == "" {
		return nil, errors.New("http: key listen is required")
	}
	return func(ctx context.Context, app http.Handler) error {
		ln, err := listen(local)
		if err != nil {
			return err
		}
		hclog.L().Info("serving", "addr", ln.Addr().String())
		return serve(ctx, ln, app)
	}, nil
}

// runServer is the http-runner: a server runner that binds its own socket,
// so it returns before binding when paster check asks it to check its
// settings (runner.Checking).
func runServer(ctx context.Context, app http.Handler, _ map[string]string, local entrypoints.Local) error {
	if local.Get("listen") == "" {
		return local.Errorf("listen", "http-runner: key listen is required")
	}
	if runner.Checking(ctx) {
		return nil
	}
	ln, err := listen(local)
	if err != nil {
		return err
	}
	return serve(ctx, ln, app)
}

func newTicker(_ map[string]string, local entrypoints.Local) (entrypoints.Coroutine, error) {
	every, err := local.Duration("interval", time.Second)
	if err != nil {
		return nil, err
	}
	if every <= 0 {
		return nil, fmt.Errorf("ticker: interval must be positive, not %s", every)
	}
	return func(ctx context.Context) error {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				hclog.L().Info("tick")
			}
		}
	}, nil
}
