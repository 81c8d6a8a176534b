package builtin

import (
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
)

// pprofKeys are the local keys egg:paster#pprof reads (Keys).
var pprofKeys = []string{"allow"}

// pprofFactory is egg:paster#pprof, Go's profiler (net/http/pprof) as an
// app, for mounting where an operator chooses: it is never on unless an INI
// file mounts it. Relative to its mount: / is the index, /profile a CPU
// profile (?seconds=N), /trace an execution trace, /heap, /goroutine and the
// other runtime profiles by name, /cmdline and /symbol. Keys:
//
//	allow   client networks allowed, CIDR or addresses separated by spaces
//	        or commas (default: loopback and unix only, 127.0.0.0/8 ::1/128); others
//	        get 403. The client is ClientAddr(r): behind a proxy, the
//	        address the prefix filter derived from X-Forwarded-For; a
//	        request relayed by a proxy (X-Forwarded-For, Forwarded or
//	        X-Real-IP) that no prefix filter read gets 403 too
//
// A bad network is an error naming the file, line, section and key.
//
//	[app:pprof]
//	use = egg:paster#pprof
//	allow = 127.0.0.1/32 10.0.0.0/8
func pprofFactory(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("pprof", local, pprofKeys)
	allow, err := networks(local, "allow", localPeers)
	if err != nil {
		return nil, err
	}
	return &pprofApp{allow: allow}, nil
}

type pprofApp struct{ allow peers }

func (a *pprofApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !clientAllowed(r, a.allow) {
		http.Error(w, "pprof: client not allowed (see the allow key)", http.StatusForbidden)
		return
	}
	switch name := strings.Trim(r.URL.Path, "/"); name {
	case "":
		// Index lists the profiles with links relative to the mount.
		if !strings.HasSuffix(r.URL.Path, "/") {
			siteRedirect(w, r, ScriptName(r)+"/", "", http.StatusMovedPermanently)
			return
		}
		pprof.Index(w, r)
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Handler(name).ServeHTTP(w, r)
	}
}
