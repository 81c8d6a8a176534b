package builtin

import "github.com/paster-dev/paster/entrypoints"

// PasteDist and PasteDeployDist let configuration files written for Python's
// Paste keep their references: egg:Paste#urlmap, egg:Paste#http,
// egg:PasteDeploy#prefix and the others below resolve to the same factories
// as egg:paster#NAME. Options of Paste's own server that mean nothing here
// (use_threadpool, threadpool_workers, ...) are accepted with a warning by
// the http runner. Entry points of Paste that paster does not have
// (evalerror, error_catcher, cgi, ...) stay missing, and the loader's error
// lists what exists.
var (
	PasteDist = &entrypoints.Dist{
		Name:    "Paste",
		Version: Version,
		Apps:    map[string]entrypoints.AppFactory{"static": staticFactory},
		Composites: map[string]entrypoints.CompositeFactory{
			"urlmap":  urlmapFactory,
			"cascade": cascadeFactory,
		},
		FilterApps: map[string]entrypoints.FilterAppFactory{
			"translogger": transloggerFactory,
			"gzip":        gzipFactory,
		},
		Runners: map[string]entrypoints.ServerRunner{"http": httpRunner},
	}
	PasteDeployDist = &entrypoints.Dist{
		Name:       "PasteDeploy",
		Version:    Version,
		FilterApps: map[string]entrypoints.FilterAppFactory{"prefix": prefixFactory},
	}
)
