package builtin

import (
	"net"
	"net/http"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
)

// prefixFactory is egg:paster#prefix, PasteDeploy's PrefixMiddleware, for
// apps behind a reverse proxy that mounts them under a path. Keys:
//
//	prefix                      mount path (default "/"; a trailing slash
//	                            is removed)
//	translate_forwarded_server  bool, default true
//	force_port                  port to put in Host; set but empty: drop the
//	                            port (the default of the scheme applies)
//	scheme                      scheme to force (http, https)
//
// Each request: the prefix is removed from r.URL.Path when the path starts
// with it on a segment boundary (an exact match leaves "/"), and
// ScriptName(r) is set to the prefix — set, not appended, as Paste does,
// since this filter stands outermost; urlmaps inside append to it. With
// translate_forwarded_server, the first value of X-Forwarded-Server or, in
// preference, X-Forwarded-Host becomes r.Host; the first value of
// X-Forwarded-For becomes r.RemoteAddr (as "IP:0" when it has no port, so
// that net.SplitHostPort works); X-Forwarded-Scheme, else
// X-Forwarded-Proto, becomes r.URL.Scheme (read it with Scheme(r)); those
// headers are removed from the request, as Paste pops them. Then force_port
// rewrites the port of r.Host, and scheme overrides the scheme. r.TLS is
// never changed. The filter trusts these headers: put it only behind a proxy
// that sets them.
//
// A bad boolean is an error naming the key.
func prefixFactory(next http.Handler, global map[string]string, local entrypoints.Local) (http.Handler, error) {
	p := &prefixFilter{next: next, prefix: "/"}
	if v, ok := local.Lookup("prefix"); ok {
		p.prefix = strings.TrimSpace(v)
	}
	p.prefix = normalizePrefix(p.prefix)
	var err error
	if p.translate, err = local.Bool("translate_forwarded_server", true); err != nil {
		return nil, err
	}
	if v, ok := local.Lookup("force_port"); ok {
		p.forcePort, p.hasForcePort = strings.TrimSpace(v), true
	}
	p.scheme = strings.ToLower(strings.TrimSpace(local.Get("scheme")))
	for _, k := range local.Keys() {
		switch k {
		case "prefix", "translate_forwarded_server", "force_port", "scheme":
		default:
			logger().Warn("prefix: unknown key ignored", "key", k, "at", local.Where(k).String(),
				"known", "prefix, translate_forwarded_server, force_port, scheme")
		}
	}
	return p, nil
}

type prefixFilter struct {
	next         http.Handler
	prefix       string
	translate    bool
	forcePort    string
	hasForcePort bool
	scheme       string
}

func firstValue(v string) string {
	first, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(first)
}

func (p *prefixFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var r2 *http.Request
	if _, ok := matchPrefix(r.URL.Path, p.prefix); ok {
		r2 = mount(r, p.prefix, p.prefix)
	} else {
		r2 = WithScriptName(r, p.prefix)
		u := *r.URL
		r2.URL = &u
	}
	if p.translate {
		h := r.Header
		if h.Get("X-Forwarded-Server") != "" || h.Get("X-Forwarded-Host") != "" || h.Get("X-Forwarded-For") != "" ||
			h.Get("X-Forwarded-Scheme") != "" || h.Get("X-Forwarded-Proto") != "" {
			h = h.Clone()
			r2.Header = h
			if v := firstValue(h.Get("X-Forwarded-Server")); v != "" {
				r2.Host = v
			}
			if v := firstValue(h.Get("X-Forwarded-Host")); v != "" {
				r2.Host = v
			}
			if v := firstValue(h.Get("X-Forwarded-For")); v != "" {
				if _, _, err := net.SplitHostPort(v); err == nil {
					r2.RemoteAddr = v
				} else {
					r2.RemoteAddr = net.JoinHostPort(strings.Trim(v, "[]"), "0")
				}
			}
			if v := strings.TrimSpace(h.Get("X-Forwarded-Scheme")); v != "" {
				r2.URL.Scheme = strings.ToLower(v)
			} else if v := firstValue(h.Get("X-Forwarded-Proto")); v != "" {
				r2.URL.Scheme = strings.ToLower(v)
			}
			for _, k := range []string{"X-Forwarded-Server", "X-Forwarded-Host", "X-Forwarded-For", "X-Forwarded-Scheme", "X-Forwarded-Proto"} {
				h.Del(k)
			}
		}
	}
	if p.hasForcePort {
		host := r2.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if p.forcePort != "" {
			host = net.JoinHostPort(host, p.forcePort)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]" // a bare IPv6 address
		}
		r2.Host = host
	}
	if p.scheme != "" {
		r2.URL.Scheme = p.scheme
	}
	p.next.ServeHTTP(w, r2)
}
