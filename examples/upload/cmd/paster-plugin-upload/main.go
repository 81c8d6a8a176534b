// Command paster-plugin-upload serves the upload dist as a paster plugin.
package main

import (
	"github.com/paster-dev/paster/examples/upload"
	"github.com/paster-dev/paster/plugins"
)

func main() { plugins.Serve(upload.Dist) }
