// Command paster-plugin-chat serves the chat dist as a paster plugin.
package main

import (
	"github.com/paster-dev/paster/examples/chat"
	"github.com/paster-dev/paster/plugins"
)

func main() { plugins.Serve(chat.Dist) }
