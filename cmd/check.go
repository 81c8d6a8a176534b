package pastercmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/paster-dev/paster/engine"
	"github.com/paster-dev/paster/entrypoints"
)

func checkCommand(args []string, stdout, stderr io.Writer) int {
	var opts serveOptions
	fs := flag.NewFlagSet("paster check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts.registerLoad(fs, "check")
	asJSON := fs.Bool("json", false, "print the composition tree as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: paster check [options] CONFIG[#name] [var=value ...]")
		fmt.Fprintln(stderr, "Loads the server and the app, calls every factory, has the server runner check its settings, binds nothing; exits 1 on any error.")
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
		fmt.Fprintln(stderr, "paster check: you must give a config file")
		return 2
	}
	cfg := parseConfigArg(positional[0])
	vars, err := parseVars(positional[1:])
	if err != nil {
		fmt.Fprintf(stderr, "paster check: %v\n", err)
		return 2
	}
	logger, closer, err := opts.log.newLogger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "paster check: %v\n", err)
		return 2
	}
	defer closer.Close()

	session, err := engine.Check(context.Background(), opts.engineConfig(cfg, vars, logger))
	if err != nil {
		fmt.Fprintf(stderr, "paster check: %v\n", err)
		return 1
	}
	tree := checkReport{Files: session.Files, Roots: session.Root}
	for _, c := range session.Coroutines {
		tree.Coroutines = append(tree.Coroutines, c.Name)
	}
	for _, l := range session.Unused() {
		tree.Unused = append(tree.Unused, l.String())
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(tree); err != nil {
			fmt.Fprintf(stderr, "paster check: %v\n", err)
			return 1
		}
		return 0
	}
	tree.print(stdout)
	return 0
}

// checkReport is what "paster check" prints.
type checkReport struct {
	Files      []string            `json:"files"`
	Roots      []*entrypoints.Node `json:"roots"`
	Coroutines []string            `json:"coroutines,omitempty"`
	// Unused lists the sections this composition does not use, as
	// "FILE:LINE [SECTION]": alternatives, or the target of a misspelling.
	Unused []string `json:"unused,omitempty"`
}

func (r checkReport) print(w io.Writer) {
	for _, root := range r.Roots {
		printNode(w, root, "", true, true)
	}
	if len(r.Coroutines) > 0 {
		fmt.Fprintf(w, "startup coroutines: %s\n", strings.Join(r.Coroutines, ", "))
	}
	for _, u := range r.Unused {
		fmt.Fprintf(w, "not used: %s\n", u)
	}
	fmt.Fprintf(w, "files read: %s\n", strings.Join(r.Files, ", "))
	fmt.Fprintln(w, "ok")
}

// composingNode names the nodes that only compose their children; their
// local conf is their innermost child's and is printed there.
var composingNode = map[string]bool{"filter-with": true, "pipeline": true, "filter-app": true}

// printNode prints one node of the composition tree and its children, with
// its entry point, local conf and (for roots) global conf.
func printNode(w io.Writer, n *entrypoints.Node, indent string, last, root bool) {
	branch, childIndent := "├─ ", indent+"│  "
	if last {
		branch, childIndent = "└─ ", indent+"   "
	}
	if root {
		branch, childIndent = "", ""
	}
	where := n.File
	if n.Line > 0 {
		where = fmt.Sprintf("%s:%d", n.File, n.Line)
	}
	fmt.Fprintf(w, "%s%s[%s] %s  (%s)\n", indent, branch, n.Section, n.EntryPoint, where)
	detail := childIndent + "│    "
	if len(n.Children) == 0 {
		detail = childIndent + "     "
	}
	if !composingNode[n.EntryPoint] {
		for _, kv := range n.Local {
			fmt.Fprintf(w, "%s%s = %s\n", detail, kv.Key, kv.Value)
		}
	}
	// A server's keys hidden by a global: the server uses the global's
	// value (runner.Unshadow).
	for _, sh := range serverShadows(n) {
		fmt.Fprintf(w, "%s%s = %s  (the global value; the section's %q at %s is hidden)\n", detail, sh.Key, sh.Global, sh.Value, sh.At)
	}
	if root {
		keys := make([]string, 0, len(n.Global))
		for k := range n.Global {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "%sglobal %s = %s\n", detail, k, n.Global[k])
		}
	}
	for i, c := range n.Children {
		printNode(w, c, childIndent, i == len(n.Children)-1, false)
	}
}

// serverShadows returns the keys of server node n that a global hides,
// which the server takes the global's value of (runner.Unshadow); none for
// the other kinds, whose hidden keys the loader warns about.
func serverShadows(n *entrypoints.Node) []entrypoints.Shadow {
	if n.Kind != entrypoints.KindServer.String() {
		return nil
	}
	return n.Conf().Shadows()
}
