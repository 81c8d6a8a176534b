// Command benchserve serves the benchmark's hello handler as one of the
// targets bench/run.sh compares, on a free loopback port, and prints
// "listening ADDR" as its first line on stdout once it accepts. It serves
// until SIGINT or SIGTERM.
//
//	benchserve -target plain          net/http's http.Server, nothing else
//	benchserve -target paster-http    the built-in dist's http runner
//	                                  (egg:paster#http) with default settings
//	benchserve -target paster-serve   the same, with the layers paster serve
//	                                  puts around every app: a runner.Front
//	                                  over a runner.Mount (reload without
//	                                  losing a request) over
//	                                  observe.Instrument (/metrics)
//	benchserve -target paster-plugin  the same runner serving egg:hello#main
//	                                  from the plugin binary paster-plugin-hello
//	                                  in -plugin-dir, as paster serve does
//	benchserve -target reverse-proxy  httputil.ReverseProxy in front of the
//	                                  hello handler served by a separate
//	                                  benchserve process on a unix socket:
//	                                  what users would otherwise pick
//	benchserve -target bench-inproc   egg:bench#main (bench/benchdist:
//	                                  /hello, /cpu, /sink, /source)
//	                                  compiled in, on the http runner
//	benchserve -target bench-plugin   the same app from the plugin binary
//	                                  paster-plugin-bench in -plugin-dir
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/bench/benchdist"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/builtin"
	"github.com/paster-dev/paster/runner/observe"
)

var helloBody = []byte("Hello, world!\n")

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(helloBody)
}

func main() {
	target := flag.String("target", "plain", "what serves: plain, paster-http, paster-serve, paster-plugin, reverse-proxy")
	host := flag.String("host", "127.0.0.1", "address to bind")
	pluginDir := flag.String("plugin-dir", "", "directory of paster-plugin-hello and paster-plugin-bench (paster-plugin, bench-plugin)")
	unixSocket := flag.String("unix", "", "serve the plain hello handler on this unix socket (the reverse proxy's backend)")
	flag.Parse()
	logger := hclog.New(&hclog.LoggerOptions{Name: "benchserve", Output: os.Stderr, Level: hclog.Warn})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch *target {
	case "plain":
		err = servePlain(ctx, *host)
	case "paster-http":
		err = servePaster(ctx, *host, http.HandlerFunc(hello))
	case "paster-serve":
		core := runner.NewCore(runner.CoreOptions{})
		defer core.Close()
		app := observe.Instrument(observe.New(), "main", http.HandlerFunc(hello))
		err = servePaster(ctx, *host, runner.NewFront(runner.NewMount(app, core, nil)))
	case "paster-plugin":
		err = servePlugin(ctx, *host, *pluginDir, "hello", entrypoints.NewLocal("greeting", "Hello", "name", "world"))
	case "bench-inproc":
		var app http.Handler
		if app, err = benchdist.Dist.Apps["main"](map[string]string{}, entrypoints.NewLocal()); err == nil {
			err = servePaster(ctx, *host, app, unlimitedBody...)
		}
	case "bench-plugin":
		err = servePlugin(ctx, *host, *pluginDir, "bench", entrypoints.NewLocal(), unlimitedBody...)
	case "reverse-proxy":
		err = serveReverseProxy(ctx, *host)
	case "backend":
		err = serveBackend(ctx, *unixSocket)
	default:
		err = fmt.Errorf("unknown target %q (plain, paster-http, paster-serve, paster-plugin, reverse-proxy, bench-inproc, bench-plugin)", *target)
	}
	if err != nil {
		logger.Error("serving failed", "target", *target, "error", err)
		os.Exit(1)
	}
}

func servePlain(ctx context.Context, host string) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	return serveNetHTTP(ctx, ln, http.HandlerFunc(hello))
}

// serveNetHTTP serves h on ln with a plain http.Server until ctx ends.
func serveNetHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// addrWriter passes log output to stderr and prints the address of the
// runner's "serving" line on stdout, once.
type addrWriter struct{ once sync.Once }

var servingAddr = regexp.MustCompile(`serving: addr=(\S+)`)

func (a *addrWriter) Write(p []byte) (int, error) {
	if m := servingAddr.FindSubmatch(p); m != nil {
		a.once.Do(func() { fmt.Printf("listening %s\n", m[1]) })
	}
	return os.Stderr.Write(p)
}

// servePaster serves app with the built-in http runner, default settings
// but for the extra key/value pairs given.
func servePaster(ctx context.Context, host string, app http.Handler, extra ...string) error {
	hclog.SetDefault(hclog.New(&hclog.LoggerOptions{Name: "paster", Output: &addrWriter{}, Level: hclog.Info}))
	run := builtin.Dist.Runners["http"]
	return run(ctx, app, map[string]string{}, entrypoints.NewLocal(append([]string{"host", host, "port", "0"}, extra...)...))
}

// unlimitedBody lifts max_body_bytes for bench/benchdist's sink, which
// takes a 1 GiB upload.
var unlimitedBody = []string{"max_body_bytes", "0"}

// servePlugin loads egg:DIST#main through a plugins.Host, as paster serve
// does, and serves it with the http runner.
func servePlugin(ctx context.Context, host, pluginDir, dist string, local entrypoints.Local, extra ...string) error {
	if pluginDir == "" {
		return errors.New("-plugin-dir is required")
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "paster", Output: os.Stderr, Level: hclog.Warn})
	pluginHost := plugins.NewHost(plugins.HostOptions{Logger: logger, PluginDirs: []string{pluginDir}})
	defer pluginHost.Close(context.Background())
	d, err := pluginHost.Egg(dist, entrypoints.Origin{})
	if err != nil {
		return err
	}
	app, err := d.Apps["main"](map[string]string{}, local)
	if err != nil {
		return err
	}
	return servePaster(ctx, host, app, extra...)
}

// serveBackend serves the hello handler on a unix socket.
func serveBackend(ctx context.Context, socket string) error {
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	return serveNetHTTP(ctx, ln, http.HandlerFunc(hello))
}

// serveReverseProxy starts a backend process on a unix socket and serves
// httputil.ReverseProxy in front of it.
func serveReverseProxy(ctx context.Context, host string) error {
	dir, err := os.MkdirTemp("", "benchserve")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "backend.sock")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	backend := exec.CommandContext(ctx, self, "-target", "backend", "-unix", socket)
	backend.Stderr = os.Stderr
	backend.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := backend.Start(); err != nil {
		return err
	}
	defer backend.Wait()
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 256,
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err := net.Dial("unix", socket)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("backend did not start: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.Out.URL.Scheme, r.Out.URL.Host = "http", "backend" },
		Transport: transport,
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	return serveNetHTTP(ctx, ln, proxy)
}
