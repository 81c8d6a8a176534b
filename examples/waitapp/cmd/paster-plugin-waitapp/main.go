// Command paster-plugin-waitapp serves the waitapp dist as a paster plugin.
package main

import (
	"github.com/paster-dev/paster/examples/waitapp"
	"github.com/paster-dev/paster/plugins"
)

func main() { plugins.Serve(waitapp.Dist) }
