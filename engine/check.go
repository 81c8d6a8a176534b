package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// CheckTimeout bounds how long a server runner may take to check its
// settings.
const CheckTimeout = 30 * time.Second

// Check loads cfg the way Run loads a generation — the same load, so it
// finds every error serving would find before binding: every factory is
// called (a Core is made but not started: runner.CoreStarter), every plugin
// started, the server section's settings
// (shutdown_timeout, ready_timeout, the Core's keys) and the coroutines'
// policies read — and then has the server runner check its own settings
// (checkServer). Nothing is bound and no coroutine started. Everything the
// load made is released before Check returns. It returns the session the
// configuration was loaded with (its files, trees, coroutines and unused
// sections), or the first error, which names the file, line, section and
// key when the configuration is at fault.
func Check(ctx context.Context, cfg Config) (*entrypoints.Session, error) {
	m, err := New(cfg)
	if err != nil {
		return nil, err
	}
	m.checking = true
	defer m.closeAll()
	g, err := m.load()
	if err != nil {
		return nil, err
	}
	defer m.discard(g)
	if err := checkServer(ctx, g, CheckTimeout); err != nil {
		return nil, err
	}
	return g.session, nil
}

// checkServer asks the server runner of generation g to check its
// settings: it calls it with a context that asks for a check
// (runner.WithCheck), which runners built on runner.New or
// runner.NewHTTPServer, in this process or in a plugin's, honour by
// validating every key and returning without binding. The error it returns
// is the runner's. A runner that reports serving (runner.Ready) or does not
// return within timeout is stopped, and that is an error too: it does not
// honour the check. A server made by a server factory is not called: the
// factory validated its settings when the server was loaded.
func checkServer(ctx context.Context, g *generation, timeout time.Duration) error {
	if len(g.session.Root) == 0 {
		return errors.New("no server was loaded")
	}
	node := g.session.Root[0]
	if node.Protocol != entrypoints.ProtoRunner {
		return nil
	}
	ctx, cancel := context.WithCancel(runner.WithCheck(ctx))
	defer cancel()
	serving := make(chan struct{})
	var once sync.Once
	ctx = runner.WithReadyFunc(ctx, func() { once.Do(func() { close(serving) }) })
	done := make(chan error, 1)
	go func() { done <- g.server(ctx, g.app) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var why string
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("server runner %s: %w", node.EntryPoint, err)
		}
		return nil
	case <-serving:
		why = "started serving"
	case <-timer.C:
		why = fmt.Sprintf("did not return within %s", timeout)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(PluginStopTimeout):
	}
	return fmt.Errorf("server runner %s (%s:%d [%s]) %s when asked to check its settings: it does not honour runner.Checking",
		node.EntryPoint, node.File, node.Line, node.Section, why)
}
