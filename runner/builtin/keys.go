package builtin

import (
	"slices"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/natscore"
)

// entryKeys are the local keys of each entry point of Dist, by name: what
// Keys returns. Each factory warns about the keys outside its list
// (warnUnknown; the cores refuse them).
var entryKeys = map[string][]string{
	"static":      staticKeys,
	"metrics":     nil,
	"health":      healthKeys,
	"pprof":       pprofKeys,
	"urlmap":      {"not_found_app"},
	"cascade":     {"catch"},
	"translogger": transloggerKeys,
	"gzip":        gzipKeys,
	"prefix":      prefixKeys,
	"limits":      limitsKeys,
	"request_id":  requestIDKeys,
	"cors":        corsKeys,
	"ratelimit":   ratelimitKeys,
	"http":        slices.Concat(runner.HTTPServerKeys, runner.RunnerKeys),
	"memory":      runner.CoreKeys,
	"nats":        slices.Concat(natscore.Keys, runner.CoreKeys),
}

// Keys returns the local configuration keys the entry point name of Dist
// reads (so of the Paste and PasteDeploy aliases too), and false for a name
// Dist does not have. A section's key outside them is logged as a warning,
// with a did-you-mean, when the section is loaded; the http runner's also
// fail paster check (runner.HTTPConfig.Unknown), and the cores' are errors
// (runner.UnknownKey). Besides the keys listed,
// urlmap's keys are paths ("/path", "domain HOST /path") and cascade's name
// its apps ("app1", "app2", ...); a server section's startup and core keys
// are the loader's, whatever its runner.
func Keys(name string) ([]string, bool) {
	keys, ok := entryKeys[name]
	return slices.Clone(keys), ok
}

// warnUnknown logs every key of local not in known, naming the entry point
// name, the key, where it was written and the known key it may be a
// misspelling of.
func warnUnknown(name string, local entrypoints.Local, known []string) {
	for _, k := range local.Keys() {
		if slices.Contains(known, k) {
			continue
		}
		args := []any{"key", k, "at", local.Where(k).String()}
		if s := entrypoints.Suggest(k, known); s != "" {
			args = append(args, "did_you_mean", s)
		}
		logger().Warn(name+": unknown key ignored", args...)
	}
}
