// Command paster-plugin-bench serves the benchmarks' dist (bench/benchdist)
// as a paster plugin.
package main

import (
	"github.com/paster-dev/paster/bench/benchdist"
	"github.com/paster-dev/paster/plugins"
)

func main() { plugins.Serve(benchdist.Dist) }
