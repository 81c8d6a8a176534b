// Package pastercmd is the paster command as a library, so that a custom
// build with its own dists compiled in is a three-line main:
//
//	package main
//
//	import (
//		pastercmd "github.com/paster-dev/paster/cmd"
//		"github.com/paster-dev/paster/entrypoints"
//		"example.com/greeter"
//	)
//
//	func main() {
//		entrypoints.Register(greeter.Dist)
//		pastercmd.Main()
//	}
//
// Main runs PasteDeploy compositions: it serves the apps an INI file
// composes, checks a configuration without serving it, and lists the entry
// points of the dists it knows (those registered before Main is called are
// listed as compiled in). cmd/paster is the stock build.
//
//	paster serve CONFIG[#name] [start|stop|restart|status] [options] [var=value ...]
//	paster check CONFIG[#name] [--json] [var=value ...]
//	paster points [--json] [--plugin-dir DIR]
//	paster version
//
// paster serve reloads without dropping a request on SIGHUP, and with
// --reload whenever an INI file it read or a plugin binary it started
// changes: the new configuration is loaded completely beside the running
// one and swapped in only if it loads and its startup coroutines are ready;
// the old one drains within shutdown_timeout. Package engine does that and
// describes a generation's lifecycle; daemon.go here the daemon commands.
package pastercmd

import (
	"fmt"
	"io"
	"os"

	"github.com/paster-dev/paster/runner/builtin"
)

const usage = `usage: paster COMMAND [options]

commands:
  serve CONFIG[#name] [start|stop|restart|status] [var=value ...]
                          serve the composition CONFIG describes
  check CONFIG[#name]     load and create everything, bind nothing, print the tree
  points                  list the dists and their entry points by kind
  version                 print paster's version

"paster COMMAND -h" describes a command's options.
`

// Main runs the paster command named by os.Args and exits the process with
// its status: 0 on success, 1 when the command failed (the reason is on
// stderr), 2 on a usage error. Register compiled-in dists
// (entrypoints.Register) before calling it.
func Main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one paster command and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serveCommand(args[1:], stdout, stderr)
	case "check":
		return checkCommand(args[1:], stdout, stderr)
	case "points":
		return pointsCommand(args[1:], stdout, stderr)
	case "version", "--version", "-V":
		fmt.Fprintf(stdout, "paster %s\n", builtin.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "paster: unknown command %q\n\n%s", args[0], usage)
	return 2
}
