package pastercmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/engine"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins"
)

// distPoints is one dist's entry points by kind, as "paster points" prints them.
type distPoints struct {
	Name    string              `json:"name"`
	Version string              `json:"version,omitempty"`
	Source  string              `json:"source"` // "compiled in" or the plugin binary's path
	Points  map[string][]string `json:"entry_points"`
}

func describeDist(d *entrypoints.Dist, source string) distPoints {
	p := distPoints{Name: d.Name, Version: d.Version, Source: source, Points: map[string][]string{}}
	for _, g := range entrypoints.Groups() {
		if names := d.Names(g.Protocol); len(names) > 0 {
			p.Points[g.Label] = names
		}
	}
	return p
}

func pointsCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("paster points", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	var pluginDirs stringList
	fs.Var(&pluginDirs, "plugin-dir", "also list plugin binaries in `DIR` (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var all []distPoints
	for _, d := range entrypoints.Default.Dists() {
		all = append(all, describeDist(d, "compiled in"))
	}
	plugged, err := pluginPoints(pluginDirs, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "paster points: %v\n", err)
		return 1
	}
	all = append(all, plugged...)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(all); err != nil {
			return 1
		}
		return 0
	}
	for _, d := range all {
		version := ""
		if d.Version != "" {
			version = " " + d.Version
		}
		fmt.Fprintf(stdout, "%s%s (%s)\n", d.Name, version, d.Source)
		for _, g := range entrypoints.Groups() {
			if names := d.Points[g.Label]; len(names) > 0 {
				fmt.Fprintf(stdout, "  %-15s %s\n", g.Label+":", strings.Join(names, ", "))
			}
		}
	}
	return 0
}

// pluginPoints starts every plugin binary (paster-plugin-*) in the plugin
// path, asks it for its entry points, and stops it again. A binary that fails
// to start is reported on stderr and skipped; a dist found twice is listed
// from its first directory only, as egg: would resolve it.
func pluginPoints(dirs []string, stderr io.Writer) ([]distPoints, error) {
	logger := hclog.New(&hclog.LoggerOptions{Name: "paster", Level: hclog.Warn, Output: stderr})
	host := plugins.NewHost(plugins.HostOptions{Logger: logger, PluginDirs: dirs})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), engine.PluginStopTimeout)
		defer cancel()
		host.Close(ctx)
	}()
	seen := map[string]bool{}
	var out []distPoints
	for _, dir := range host.SearchPath(entrypoints.Origin{}) {
		matches, err := filepath.Glob(filepath.Join(dir, plugins.BinaryPrefix+"*"))
		if err != nil {
			return nil, err
		}
		for _, path := range matches {
			name := strings.TrimPrefix(filepath.Base(path), plugins.BinaryPrefix)
			if seen[name] || entrypoints.Default.Dist(name) != nil {
				continue
			}
			seen[name] = true
			d, err := host.Binary(path, entrypoints.Origin{})
			if err != nil {
				fmt.Fprintf(stderr, "paster points: skipping %s: %v\n", path, err)
				continue
			}
			out = append(out, describeDist(d, path))
		}
	}
	return out, nil
}
