package plugins

import (
	"os"
	"slices"
	"strings"
)

// hostOnlyEnv are the environment variables that speak to the host process
// only: systemd's socket activation (LISTEN_*), notification socket and
// watchdog. A plugin process that inherited them could take the host's
// sockets for its own or send systemd messages for it.
var hostOnlyEnv = []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

// pluginEnviron is the host's environment less hostOnlyEnv: what a plugin
// process starts with.
func pluginEnviron() []string {
	env := os.Environ()
	out := env[:0:0]
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !slices.Contains(hostOnlyEnv, name) {
			out = append(out, kv)
		}
	}
	return out
}
