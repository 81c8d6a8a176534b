package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// serveOptions are the options of "paster serve".
type serveOptions struct {
	appName, serverName string
	pidFile             string
	log                 logOptions
	pluginDirs          stringList
}

func (o *serveOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.appName, "app-name", "", "app section `NAME` or URI to serve (default: CONFIG's #name, else main)")
	fs.StringVar(&o.appName, "n", "", "short for --app-name")
	fs.StringVar(&o.serverName, "server-name", "", "server section `NAME` or URI (default: CONFIG's #name, else main)")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the process id to `FILE`; removed at exit")
	fs.StringVar(&o.log.file, "log-file", "", "append logs to `FILE` instead of stderr")
	fs.StringVar(&o.log.level, "log-level", "info", "log `LEVEL`: trace, debug, info, warn, error")
	fs.StringVar(&o.log.format, "log-format", "text", "log `FORMAT`: text or json")
	fs.Var(&o.pluginDirs, "plugin-dir", "search `DIR` for plugin binaries (repeatable; searched first)")
}

func serveCommand(args []string, stdout, stderr io.Writer) int {
	var opts serveOptions
	fs := flag.NewFlagSet("paster serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: paster serve [options] CONFIG[#name] [start|stop|restart|status] [var=value ...]")
		fs.PrintDefaults()
	}
	positional, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if len(positional) == 0 {
		fmt.Fprintln(stderr, "paster serve: you must give a config file")
		return 2
	}
	cfg := parseConfigArg(positional[0])
	varArgs := positional[1:]
	vars, err := parseVars(varArgs)
	if err != nil {
		fmt.Fprintf(stderr, "paster serve: %v\n", err)
		return 2
	}

	logger, closer, err := opts.log.newLogger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "paster serve: %v\n", err)
		return 2
	}
	defer closer.Close()

	if opts.pidFile != "" {
		if err := writePIDFile(opts.pidFile); err != nil {
			logger.Error("cannot write pid file", "file", opts.pidFile, "error", err)
			return 1
		}
		defer removePIDFile(opts.pidFile)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, vars, &opts, logger); err != nil {
		logger.Error("serve failed", "error", err)
		return 1
	}
	return 0
}

// serve loads the server first and then the app, both with vars as global
// conf, and serves until ctx ends.
func serve(ctx context.Context, cfg configArg, vars map[string]string, opts *serveOptions, logger hclog.Logger) error {
	comp, err := loadComposition(cfg, opts.appName, opts.serverName, vars, opts.pluginDirs, logger)
	if err != nil {
		return err
	}
	defer comp.Close(context.Background())
	logger.Info("starting server", "pid", os.Getpid(), "config", cfg.URI)
	return comp.Serve(ctx)
}
