// Command paster-plugin-wsecho serves the wsecho dist as a paster plugin.
package main

import (
	"github.com/paster-dev/paster/examples/wsecho"
	"github.com/paster-dev/paster/plugins"
)

func main() { plugins.Serve(wsecho.Dist) }
