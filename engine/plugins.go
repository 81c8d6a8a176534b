package engine

import (
	"context"
	"errors"

	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/runner/observe"
)

// pluginInfos describes the processes of pool for the snapshot, each with
// the generations whose scopes hold it.
func pluginInfos(pool *plugins.Pool) []observe.Plugin {
	var out []observe.Plugin
	for _, i := range pool.Plugins() {
		out = append(out, observe.Plugin{Path: i.Path, Dist: i.Dist, Version: i.Version, PID: i.PID, State: i.State.String(), Running: i.State == plugins.StateRunning, Stopped: i.State == plugins.StateClosed, NextRestart: i.NextRestart, Restarts: i.Restarts, Instances: i.Instances, LogDropped: i.LogDropped, Generations: i.Scopes})
	}
	return out
}

// releasePlugins closes the generation's plugin scopes within
// PluginStopTimeout: the instances its app, filters and coroutines made
// and, unless keepServer (its server serves on; the serving owns that
// scope then), those its server section made. Plugin processes no other
// scope uses stop.
func (g *generation) releasePlugins(keepServer bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), PluginStopTimeout)
	defer cancel()
	err := g.scope.Close(ctx)
	if !keepServer {
		err = errors.Join(err, g.serverScope.Close(ctx))
	}
	return err
}

// pluginPaths returns the plugin binaries the generation started or reused.
func (g *generation) pluginPaths() []string {
	var out []string
	for _, s := range []*plugins.Scope{g.serverScope, g.scope} {
		for _, b := range s.Binaries() {
			out = append(out, b.Path)
		}
	}
	return out
}
