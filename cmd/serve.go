package pastercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	oklogrun "github.com/oklog/run"
	"github.com/paster-dev/paster/engine"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/privilege"
)

// serveOptions are the options of "paster serve".
type serveOptions struct {
	appName, serverName string
	pidFile             string
	log                 logOptions
	pluginDirs          stringList

	reload         bool
	reloadInterval string
	daemon         bool
	monitorRestart bool
	status         bool
	stopDaemon     bool

	// user and group are --user and --group; runAs is who they name.
	user, group string
	runAs       *privilege.User
}

// registerLoad registers the options that choose and load a composition,
// which check and serve share; verb ("check" or "serve") words their help
// and picks the default log level (check logs warnings only).
func (o *serveOptions) registerLoad(fs *flag.FlagSet, verb string) {
	logFile, logLevel := "append logs to `FILE` instead of stderr", "warn"
	if verb == "serve" {
		logFile, logLevel = logFile+" (default paster.log with --daemon)", "info"
	}
	fs.StringVar(&o.appName, "app-name", "", "app section `NAME` or URI to "+verb+" (default: CONFIG's #name, else main)")
	fs.StringVar(&o.appName, "n", "", "short for --app-name")
	fs.StringVar(&o.serverName, "server-name", "", "server section `NAME` or URI to "+verb+" (default: CONFIG's #name, else main)")
	fs.StringVar(&o.log.file, "log-file", "", logFile)
	fs.StringVar(&o.log.level, "log-level", logLevel, "log `LEVEL`: trace, debug, info, warn, error")
	fs.StringVar(&o.log.format, "log-format", "text", "log `FORMAT`: text or json")
	fs.Var(&o.pluginDirs, "plugin-dir", "search `DIR` for plugin binaries (repeatable; searched first)")
}

// register registers all of serve's options: registerLoad's and those of
// serving, reloading and the daemon.
func (o *serveOptions) register(fs *flag.FlagSet) {
	o.registerLoad(fs, "serve")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the process id to `FILE`; removed at exit (default paster.pid with --daemon, start, stop, status)")
	fs.BoolVar(&o.reload, "reload", false, "reload, without dropping a request, when an INI file read or a plugin binary started changes")
	fs.StringVar(&o.reloadInterval, "reload-interval", "1", "how often --reload looks at the files (`SECONDS` or a Go duration)")
	fs.BoolVar(&o.daemon, "daemon", false, "run in the background")
	fs.BoolVar(&o.monitorRestart, "monitor-restart", false, "run under a monitor process that starts the server again whenever it exits")
	fs.BoolVar(&o.status, "status", false, "same as the status subcommand")
	fs.BoolVar(&o.stopDaemon, "stop-daemon", false, "same as the stop subcommand")
	fs.StringVar(&o.user, "user", "", "after binding the sockets, run as `USER` (name or uid; plugin processes too); needs root")
	fs.StringVar(&o.group, "group", "", "after binding the sockets, run as `GROUP` (name or gid; default USER's primary group); needs root")
}

// Environment markers of the processes paster serve starts itself.
const (
	// envDaemonChild marks the background process of --daemon, which must
	// not daemonize again.
	envDaemonChild = "PASTER_DAEMON_CHILD"
	// envMonitorChild marks the server started by --monitor-restart's
	// monitor, which must not become a monitor again nor write the pid file.
	envMonitorChild = "PASTER_MONITOR_CHILD"
	// envReadyFD names the descriptor on which a background server writes
	// "ok" once it serves, so that "paster serve ... start" can report
	// whether it started.
	envReadyFD = "PASTER_READY_FD"
)

var subcommands = map[string]bool{"start": true, "stop": true, "restart": true, "status": true}

func serveCommand(args []string, stdout, stderr io.Writer) int {
	var opts serveOptions
	fs := flag.NewFlagSet("paster serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: paster serve [options] CONFIG[#name] [start|stop|restart|status] [var=value ...]")
		fs.PrintDefaults()
	}
	keepReadyFD()
	positional, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if opts.stopDaemon {
		return stopDaemon(opts.pidFileOrDefault(), "stop", stdout)
	}
	if len(positional) == 0 {
		fmt.Fprintln(stderr, "paster serve: you must give a config file")
		return 2
	}
	cfg := parseConfigArg(positional[0])
	varArgs := positional[1:]
	cmd := ""
	if len(varArgs) > 0 && subcommands[varArgs[0]] {
		cmd, varArgs = varArgs[0], varArgs[1:]
	}
	vars, err := parseVars(varArgs)
	if err != nil {
		fmt.Fprintf(stderr, "paster serve: %v\n", err)
		return 2
	}
	interval, err := entrypoints.AsDuration(opts.reloadInterval)
	if err != nil || interval <= 0 {
		fmt.Fprintf(stderr, "paster serve: --reload-interval %q: want a positive number of seconds or a Go duration\n", opts.reloadInterval)
		return 2
	}
	if opts.daemon && opts.reload {
		fmt.Fprintln(stderr, "paster serve: The --daemon and --reload options may not be used together")
		return 2
	}
	if opts.status || cmd == "status" {
		return daemonStatus(opts.pidFileOrDefault(), stdout)
	}
	monitorChild := os.Getenv(envMonitorChild) != ""
	if cmd == "restart" && (os.Getenv(envDaemonChild) != "" || monitorChild) {
		// The background child of "restart" gets the same arguments: the
		// stop half already ran in the foreground.
		cmd = "start"
	}
	if cmd == "stop" || cmd == "restart" {
		if code := stopDaemon(opts.pidFileOrDefault(), cmd, stdout); code != 0 || cmd == "stop" {
			return code
		}
	}
	if cmd == "start" || cmd == "restart" {
		opts.daemon = true
	}
	if opts.daemon && opts.reload {
		fmt.Fprintln(stderr, "paster serve: The --daemon and --reload options may not be used together")
		return 2
	}

	if opts.daemon {
		if opts.pidFile == "" {
			opts.pidFile = defaultPIDFile
		}
		if opts.log.file == "" {
			opts.log.file = defaultLogFile
		}
		if os.Getenv(envDaemonChild) == "" && !monitorChild {
			return daemonize(&opts, stdout, stderr)
		}
	}
	if opts.monitorRestart && !monitorChild {
		return monitorRestart(&opts, stdout, stderr)
	}

	logger, closer, err := opts.log.newLogger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "paster serve: %v\n", err)
		return 2
	}
	defer closer.Close()

	if opts.runAs, err = privilege.Lookup(opts.user, opts.group); err != nil {
		logger.Error("--user/--group: " + err.Error())
		return 1
	}
	if opts.runAs == nil && os.Geteuid() == 0 {
		logger.Warn("running as root: give --user and --group to run as an unprivileged user once the sockets are bound (or User= in a systemd unit)")
	}
	if opts.pidFile != "" && !monitorChild {
		pf, err := writePIDFile(opts.pidFile)
		if err != nil {
			logger.Error("cannot write pid file", "file", opts.pidFile, "error", err)
			return 1
		}
		defer pf.remove(logger)
	}

	if err := serve(context.Background(), cfg, vars, &opts, interval, monitorChild, logger); err != nil {
		logger.Error("serve failed", "error", err)
		return 1
	}
	return 0
}

// engineConfig is the engine.Config of the options, CONFIG and vars.
func (o *serveOptions) engineConfig(cfg configArg, vars map[string]string, logger hclog.Logger) engine.Config {
	return engine.Config{
		ConfigURI:  cfg.URI,
		ServerURI:  cfg.target(cfg.pick(o.serverName)),
		AppURI:     cfg.target(cfg.pick(o.appName)),
		AppName:    cfg.pick(o.appName),
		Vars:       vars,
		PluginDirs: o.pluginDirs,
		Logger:     logger,
		User:       o.runAs,
	}
}

// serve runs the generations of cfg until SIGINT or SIGTERM (or ctx ends,
// or, with watchMonitor, the monitor process is gone): SIGHUP reloads, and
// so does a change of a watched file with --reload
// (engine.Config.ReloadInterval).
func serve(ctx context.Context, cfg configArg, vars map[string]string, opts *serveOptions, interval time.Duration, watchMonitor bool, logger hclog.Logger) error {
	ecfg := opts.engineConfig(cfg, vars, logger)
	if opts.reload {
		ecfg.ReloadInterval = interval
	}
	sd := notifier{log: logger.Named("systemd")}
	ecfg.Activated = activatedSockets(sd.log)
	ecfg.OnServing = func() {
		logger.Info(fmt.Sprintf("Starting server in PID %d.", os.Getpid()))
		signalReady()
		sd.ready()
	}
	ecfg.OnReloading, ecfg.OnReloaded = sd.reloading, sd.reloaded
	m, err := engine.New(ecfg)
	if err != nil {
		return err
	}
	watchdogCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	sd.watchdog(watchdogCtx)
	// The process is a group of actors (oklog/run): the engine, which
	// serves until it is interrupted or fails; SIGINT and SIGTERM, which
	// stop it; SIGHUP, which asks it to reload; and, in the server that
	// --monitor-restart's monitor started, the watch on that monitor. When
	// one returns, the others are interrupted; serve returns the engine's
	// error. The signals are caught from here on, until serve returns.
	reload := make(chan struct{}, 1)
	runCtx, stopEngine := context.WithCancel(ctx)
	defer stopEngine()
	defer sd.stopping(runCtx)()
	var group oklogrun.Group
	var served error
	group.Add(func() error { served = m.Run(runCtx, reload); return served }, func(error) { stopEngine() })
	stopSignals, interruptStop, releaseStop := onSignals(func(sig os.Signal) bool {
		logger.Info("signal received; stopping", "signal", sig.String())
		return false
	}, syscall.SIGINT, syscall.SIGTERM)
	defer releaseStop()
	group.Add(stopSignals, interruptStop)
	hupSignals, interruptHUP, releaseHUP := onSignals(func(os.Signal) bool {
		logger.Info("SIGHUP received; reloading")
		select {
		case reload <- struct{}{}:
		default: // a reload is pending already
		}
		return true
	}, syscall.SIGHUP)
	defer releaseHUP()
	group.Add(hupSignals, interruptHUP)
	if watchMonitor {
		group.Add(untilParentGone(logger))
	}
	group.Run()
	return served
}

// onSignals returns an actor of serve's group that calls on for each of
// sigs the process receives, and ends when on returns false or when it is
// interrupted. The signals are caught from this call until release.
func onSignals(on func(os.Signal) bool, sigs ...os.Signal) (execute func() error, interrupt func(error), release func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, sigs...)
	stop := make(chan struct{})
	return func() error {
		for {
			select {
			case <-stop:
				return nil
			case sig := <-c:
				if !on(sig) {
					return nil
				}
			}
		}
	}, func(error) { close(stop) }, func() { signal.Stop(c) }
}
