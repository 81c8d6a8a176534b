// Command paster-benchhost serves examples/waitapp for the parked-waiters
// benchmark of package scenario, the way paster serve does (one host Core,
// runner.New and Run), with the app compiled in (-mode inproc) or in the
// waitapp plugin binary found in -plugins (-mode plugin). Besides the app at
// /, GET /stats answers {"waiters": N, "pids": [...]}: the waits parked on
// the host's Core and the process ids whose memory the benchmark measures
// (this process, and the plugin's).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/examples/waitapp"
	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/runner"
)

func main() {
	mode := flag.String("mode", "inproc", "inproc or plugin")
	dir := flag.String("plugins", "", "directory of paster-plugin-waitapp")
	flag.Parse()
	if err := serve(*mode, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "paster-benchhost:", err)
		os.Exit(1)
	}
}

func serve(mode, dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	at := entrypoints.Location{Section: "bench"}
	var appConf entrypoints.Local
	appConf = appConf.With("signal", "bench", at).With("timeout", "10m", at)

	core := runner.NewCore(runner.CoreOptions{})
	defer core.Close()
	pids := []int{os.Getpid()}
	var app http.Handler
	var err error
	switch mode {
	case "inproc":
		app, err = waitapp.Dist.Apps["main"](nil, appConf)
	case "plugin":
		host := plugins.NewHost(plugins.HostOptions{PluginDirs: []string{dir}, Logger: hclog.Default()})
		defer host.Close(context.Background())
		host.SetCore(core)
		d, derr := host.Egg("waitapp", entrypoints.Origin{})
		if derr != nil {
			return derr
		}
		app, err = d.Apps["main"](nil, appConf)
		for _, p := range host.Plugins() {
			pids = append(pids, p.PID)
		}
	default:
		return fmt.Errorf("-mode %q: want inproc or plugin", mode)
	}
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"waiters": core.Stats().Waiters, "pids": pids})
	})
	mux.Handle("/", app)

	var local entrypoints.Local
	local = local.With("host", "127.0.0.1", at).With("port", "0", at).With("shutdown_timeout", "5", at)
	r, err := runner.New(mux, local)
	if err != nil {
		return err
	}
	return r.Run(runner.WithCore(ctx, core))
}
