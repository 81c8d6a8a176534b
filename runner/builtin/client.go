package builtin

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"github.com/paster-dev/paster/entrypoints"
)

// loopback are the networks of the default trusted_proxies and allow lists.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// ClientAddr returns the address of the client that sent r: the one the
// prefix filter derived from X-Forwarded-For (see prefixFactory and its
// trusted_proxies key) when the request passed one, wherever the caller
// stands (a translogger outside the prefix filter sees it too), else the
// address of the connection's peer. It returns the zero netip.Addr
// (!IsValid()) when the address is unknown: a trusted proxy sent an entry
// that is not an address, or the connection has none (a Unix socket).
//
// The access log (translogger), pprof's and health's allow checks use it;
// anything else that decides by client address (a rate limit) must too, so
// that they all agree on who the client is.
func ClientAddr(r *http.Request) netip.Addr {
	if s, ok := r.Context().Value(slotKey{}).(*requestSlot); ok {
		if a, set := s.getClient(); set {
			return a
		}
	}
	return peerAddr(r.RemoteAddr)
}

// peerAddr parses an http.Request.RemoteAddr ("IP:port", or a bare IP).
func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	a, err := netip.ParseAddr(strings.Trim(remote, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

type slotKey struct{}

// requestSlot holds what the filters of one request learn for the handlers
// outside them: the derived client address (prefix) and the request ID
// (request_id). It is shared by the request's copies down the chain, so
// that a handler outside a filter (the access log) learns what the filter
// derived, as Paste's filters share one WSGI environ.
type requestSlot struct {
	mu        sync.Mutex
	client    netip.Addr
	clientSet bool
	id        string
}

func (s *requestSlot) getClient() (netip.Addr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client, s.clientSet
}

func (s *requestSlot) putClient(a netip.Addr) {
	s.mu.Lock()
	s.client, s.clientSet = a, true
	s.mu.Unlock()
}

func (s *requestSlot) getID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

func (s *requestSlot) putID(id string) {
	s.mu.Lock()
	s.id = id
	s.mu.Unlock()
}

// withSlot returns r with a requestSlot in its context, the one r already
// has or a new one, and the slot.
func withSlot(r *http.Request) (*http.Request, *requestSlot) {
	if s, ok := r.Context().Value(slotKey{}).(*requestSlot); ok {
		return r, s
	}
	s := &requestSlot{}
	return r.WithContext(context.WithValue(r.Context(), slotKey{}, s)), s
}

// forwardedClient derives the client from the connection's peer and the
// X-Forwarded-For values (header lines in order, each a comma-separated
// list): when the peer is in trusted, the list is walked from the right,
// each entry being the peer of the hop after it, until an entry is not in
// trusted; that entry is the client. When every entry is trusted the
// leftmost is. A peer not in trusted is the client, whatever the header
// says. An entry that is not an address (with or without a port) ends the
// walk with the zero Addr: the client is unknown. ok reports whether the
// peer is trusted (and so whether the other X-Forwarded-* headers may be
// believed).
func forwardedClient(peer netip.Addr, xff []string, trusted []netip.Prefix) (client netip.Addr, ok bool) {
	if !contains(trusted, peer) {
		return peer, false
	}
	var hops []string
	for _, line := range xff {
		for _, f := range strings.Split(line, ",") {
			if f = strings.TrimSpace(f); f != "" {
				hops = append(hops, f)
			}
		}
	}
	client = peer
	for i := len(hops) - 1; i >= 0 && contains(trusted, client); i-- {
		client = peerAddr(hops[i])
		if !client.IsValid() {
			return netip.Addr{}, true
		}
	}
	return client, true
}

// contains reports whether a is in one of nets.
func contains(nets []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// networks reads key as a list of networks (CIDR) or addresses separated by
// spaces or commas; unset or empty, it is def. A bad entry is an error
// naming the file, line, section and key.
func networks(local entrypoints.Local, key string, def []netip.Prefix) ([]netip.Prefix, error) {
	v, ok := local.Lookup(key)
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	var out []netip.Prefix
	for _, f := range listOf(local, key) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, local.Errorf(key, "%q is neither a network (10.0.0.0/8) nor an address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// listOf splits key's value at spaces, tabs, newlines and commas; nil when
// unset or empty.
func listOf(local entrypoints.Local, key string) []string {
	return strings.FieldsFunc(local.Get(key), func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' })
}

// clientAllowed reports whether ClientAddr(r) is in allow.
func clientAllowed(r *http.Request, allow []netip.Prefix) bool {
	return contains(allow, ClientAddr(r))
}

// remoteAddrOf is a RemoteAddr for a derived client address ("IP:0", so
// that net.SplitHostPort works on it).
func remoteAddrOf(a netip.Addr) string {
	return net.JoinHostPort(a.String(), "0")
}
