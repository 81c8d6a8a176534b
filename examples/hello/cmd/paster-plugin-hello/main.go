// Command paster-plugin-hello serves the hello dist as a paster plugin.
package main

import (
	"github.com/paster-dev/paster/examples/hello"
	"github.com/paster-dev/paster/plugins"
)

func main() { plugins.Serve(hello.Dist) }
