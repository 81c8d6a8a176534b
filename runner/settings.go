package runner

import (
	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// Unshadow returns a server section's local conf with every key that a
// global of the same name hides set to the global's value
// (entrypoints.Local.Unshadow), and logs each such key, with the value
// used and the section's value it replaces (entrypoints.Redact: not those of
// a key named like a secret), at info level on logger
// (hclog's default logger named "runner" when nil). By PasteDeploy's rule,
// which the loader keeps, "paster serve dev.ini port=9000" makes port a
// global that hides [server:main]'s port; all of a server section's keys are
// the server's settings, so the server takes the global's value. New and
// NewHTTPServer call it; a runner that reads keys of its own calls it
// before reading them. Calling it again on its result logs nothing.
func Unshadow(local entrypoints.Local, logger hclog.Logger) entrypoints.Local {
	out, applied := local.Unshadow()
	if len(applied) == 0 {
		return out
	}
	if logger == nil {
		logger = hclog.Default().Named("runner")
	}
	for _, sh := range applied {
		logger.Info("server setting taken from the global conf", "key", sh.Key, "value", entrypoints.Redact(sh.Key, sh.Global),
			"instead_of", entrypoints.Redact(sh.Key, sh.Value), "at", sh.At.String())
	}
	return out
}
