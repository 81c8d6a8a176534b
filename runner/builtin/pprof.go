package builtin

import (
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
)

// pprofFactory is egg:paster#pprof, Go's profiler (net/http/pprof) as an
// app, for mounting where an operator chooses: it is never on unless an INI
// file mounts it. Relative to its mount: / is the index, /profile a CPU
// profile (?seconds=N), /trace an execution trace, /heap, /goroutine and the
// other runtime profiles by name, /cmdline and /symbol. Keys:
//
//	allow   client networks allowed, CIDR or addresses separated by spaces
//	        or commas (default: loopback only, 127.0.0.0/8 ::1/128); others
//	        get 403
//
// A bad network is an error naming the file, line, section and key.
//
//	[app:pprof]
//	use = egg:paster#pprof
//	allow = 127.0.0.1/32 10.0.0.0/8
func pprofFactory(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("pprof", local, "allow")
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if v, ok := local.Lookup("allow"); ok && strings.TrimSpace(v) != "" {
		allow = nil
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				a, aerr := netip.ParseAddr(f)
				if aerr != nil {
					return nil, local.Errorf("allow", "%q is neither a network (10.0.0.0/8) nor an address", f)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			allow = append(allow, p.Masked())
		}
	}
	return &pprofApp{allow: allow}, nil
}

type pprofApp struct{ allow []netip.Prefix }

func (a *pprofApp) allowed(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range a.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (a *pprofApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !a.allowed(r.RemoteAddr) {
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
