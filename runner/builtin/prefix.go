package builtin

import (
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// prefixKeys are the local keys egg:paster#prefix reads (Keys).
var prefixKeys = []string{"prefix", "translate_forwarded_server", "force_port", "scheme", "trusted_proxies"}

// prefixFactory is egg:paster#prefix, PasteDeploy's PrefixMiddleware, for
// apps behind a reverse proxy that mounts them under a path. Keys:
//
//	prefix                      mount path (default "/"; a trailing slash
//	                            is removed)
//	translate_forwarded_server  bool, default true
//	force_port                  port to put in Host; set but empty: drop the
//	                            port (the default of the scheme applies)
//	scheme                      scheme to force (http, https)
//	trusted_proxies             networks (CIDR), addresses or unix (peers
//	                            on a unix socket), separated by spaces or
//	                            commas, of the proxies whose X-Forwarded-*
//	                            headers are believed (default: loopback and
//	                            unix, 127.0.0.0/8 ::1/128 unix)
//
// Each request: the prefix is removed from r.URL.Path when the path starts
// with it on a segment boundary (an exact match leaves "/"), and
// ScriptName(r) is set to the prefix — set, not appended, as Paste does,
// since this filter stands outermost; urlmaps inside append to it.
//
// With translate_forwarded_server, the forwarded headers are believed only
// when the connection's peer is in trusted_proxies; from any other peer
// they are ignored (and still removed), so a client cannot claim another
// address, host or scheme. From a trusted peer: the client address is found
// by walking X-Forwarded-For from the right (the entry a proxy appends is
// its own peer), skipping entries in trusted_proxies; the first that is
// not is the client (Paste took the first entry, which the client writes).
// It becomes ClientAddr(r), for this filter's handlers and for a
// translogger outside it, and r.RemoteAddr as "IP:0"; an entry that is not
// an address makes the client unknown (ClientAddr is the zero Addr, allow
// lists refuse it, r.RemoteAddr stays the peer). The first value of
// X-Forwarded-Server or, in preference, X-Forwarded-Host becomes r.Host;
// X-Forwarded-Scheme, else the first value of X-Forwarded-Proto, becomes
// r.URL.Scheme (read it with Scheme(r)) if it is http or https (in any
// case); a value that is neither is ignored, as if the header were absent,
// and the scheme stays as it was. Those headers are removed from the
// request, as Paste pops them. Then force_port rewrites the port of r.Host, and scheme
// overrides the scheme. r.TLS is never changed.
//
// A bad boolean or network is an error naming the key.
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
	if p.trusted, err = networks(local, "trusted_proxies", localPeers); err != nil {
		return nil, err
	}
	warnUnknown("prefix", local, prefixKeys)
	return p, nil
}

type prefixFilter struct {
	next         http.Handler
	prefix       string
	translate    bool
	forcePort    string
	hasForcePort bool
	scheme       string
	trusted      peers
}

// forwardedHeaders are the headers the filter reads and removes.
var forwardedHeaders = []string{"X-Forwarded-Server", "X-Forwarded-Host", "X-Forwarded-For", "X-Forwarded-Scheme", "X-Forwarded-Proto"}

// forwardedScheme returns v lowercased if it is http or https, and false
// for any other value (empty, another scheme, or not a scheme at all), so
// that a misconfigured or compromised proxy cannot put what it likes into
// the URLs an app builds from Scheme(r).
func forwardedScheme(v string) (string, bool) {
	switch v = strings.ToLower(v); v {
	case "http", "https":
		return v, true
	}
	return "", false
}

func firstValue(v string) string {
	first, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(first)
}

func (p *prefixFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.next.ServeHTTP(w, p.rewrite(r))
}

// ObserveRejected passes a request the server answered itself on, as this
// filter would have passed it to the app (runner.RejectObserver).
func (p *prefixFilter) ObserveRejected(r *http.Request, code int) {
	runner.ObserveRejected(p.next, p.rewrite(r), code)
}

// rewrite returns the request the app gets: mounted, with the forwarded
// headers applied or dropped (see prefixFactory).
func (p *prefixFilter) rewrite(r *http.Request) *http.Request {
	var slot *requestSlot
	if p.translate {
		r, slot = withSlot(r)
	}
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
		peer := peerAddr(r.RemoteAddr)
		peerTrusted := p.trusted.has(peer) || (p.trusted.unix && unixPeer(r))
		xff := h.Values("X-Forwarded-For")
		client, trusted := forwardedClient(peer, peerTrusted, xff, p.trusted)
		if len(xff) > 0 {
			// Without the header the client is the peer, as it is without
			// this filter (a unix-socket peer stays one for the allow lists).
			slot.putClient(client)
		}
		if client.IsValid() && client != peer {
			r2.RemoteAddr = remoteAddrOf(client)
		}
		if slices.ContainsFunc(forwardedHeaders, func(k string) bool { return h.Get(k) != "" }) {
			h = h.Clone()
			r2.Header = h
			if trusted {
				if v := firstValue(h.Get("X-Forwarded-Server")); v != "" {
					r2.Host = v
				}
				if v := firstValue(h.Get("X-Forwarded-Host")); v != "" {
					r2.Host = v
				}
				if v, ok := forwardedScheme(strings.TrimSpace(h.Get("X-Forwarded-Scheme"))); ok {
					r2.URL.Scheme = v
				} else if v, ok := forwardedScheme(firstValue(h.Get("X-Forwarded-Proto"))); ok {
					r2.URL.Scheme = v
				}
			}
			for _, k := range forwardedHeaders {
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
	return r2
}
