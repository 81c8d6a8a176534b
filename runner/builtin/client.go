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

// peers is a trusted_proxies or allow list: networks, and unix for the
// peers of connections that came in on a unix socket. Such a peer has no
// address; it is a process on this machine that could open the socket file
// (nginx in front of paster, or the operator), as local as loopback.
type peers struct {
	nets []netip.Prefix
	unix bool
}

// localPeers is the default trusted_proxies and allow list: loopback and
// unix-socket peers.
var localPeers = peers{
	nets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	unix: true,
}

// has reports whether the address a is in one of p's networks.
func (p peers) has(a netip.Addr) bool { return contains(p.nets, a) }

// unixPeer reports whether r came in on a unix socket.
func unixPeer(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && strings.HasPrefix(la.Network(), "unix")
}

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
	a, _ := clientOf(r)
	return a
}

// clientOf is ClientAddr, and whether a prefix filter derived it.
func clientOf(r *http.Request) (a netip.Addr, derived bool) {
	if s, ok := r.Context().Value(slotKey{}).(*requestSlot); ok {
		if a, set := s.getClient(); set {
			return a, true
		}
	}
	return peerAddr(r.RemoteAddr), false
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
// list): when the peer is trusted (peerTrusted: its address is in trusted,
// or it is a unix-socket peer and trusted has unix), the list is walked from the right,
// each entry being the peer of the hop after it, until an entry is not in
// trusted; that entry is the client. When every entry is trusted the
// leftmost is. A peer not in trusted is the client, whatever the header
// says. An entry that is not an address (with or without a port) ends the
// walk with the zero Addr: the client is unknown. ok reports whether the
// peer is trusted (and so whether the other X-Forwarded-* headers may be
// believed).
//
// The walk cuts one entry at a time from the right and allocates nothing:
// the header can be as long as max_header_bytes, mostly written by the
// client, and only its rightmost entries are usually read.
func forwardedClient(peer netip.Addr, peerTrusted bool, xff []string, trusted peers) (client netip.Addr, ok bool) {
	if !peerTrusted {
		return peer, false
	}
	for i := len(xff) - 1; i >= 0; i-- {
		for line := xff[i]; line != ""; {
			f := line
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				f, line = line[j+1:], line[:j]
			} else {
				line = ""
			}
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			client = peerAddr(f)
			if !client.IsValid() {
				return netip.Addr{}, true
			}
			if !trusted.has(client) {
				return client, true
			}
		}
	}
	if !client.IsValid() { // no hop named at all
		return peer, true
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

// networks reads key as a list of networks (CIDR), addresses and the word
// unix (unix-socket peers), separated by spaces or commas; unset or empty,
// it is def. A bad entry is an error naming the file, line, section and
// key.
func networks(local entrypoints.Local, key string, def peers) (peers, error) {
	v, ok := local.Lookup(key)
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	var out peers
	for _, f := range listOf(local, key) {
		if f == "unix" {
			out.unix = true
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return peers{}, local.Errorf(key, "%q is neither a network (10.0.0.0/8), an address nor unix", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out.nets = append(out.nets, p.Masked())
	}
	return out, nil
}

// listOf splits key's value at spaces, tabs, newlines and commas; nil when
// unset or empty.
func listOf(local entrypoints.Local, key string) []string {
	return strings.FieldsFunc(local.Get(key), func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' })
}

// clientAllowed reports whether ClientAddr(r) is in allow, or, when r came
// in on a unix socket and no prefix filter derived another client, whether
// allow has unix.
//
// A request that names the client it was relayed for (X-Forwarded-For,
// Forwarded, X-Real-IP) in a header no prefix filter read is refused: its
// peer is a proxy, and the client behind it unknown. Without this, a
// reverse proxy on loopback or on the unix socket, which the default allow
// lists let in, let every client through.
func clientAllowed(r *http.Request, allow peers) bool {
	a, derived := clientOf(r)
	if !derived && relayed(r.Header) {
		return false
	}
	if a.IsValid() {
		return allow.has(a)
	}
	return !derived && allow.unix && unixPeer(r)
}

// relayHeaders are the headers in which proxies name the client they
// relay a request for.
var relayHeaders = []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip"}

// relayed reports whether h names a client the request was relayed for.
func relayed(h http.Header) bool {
	for _, k := range relayHeaders {
		if len(h[k]) > 0 {
			return true
		}
	}
	return false
}

// remoteAddrOf is a RemoteAddr for a derived client address ("IP:0", so
// that net.SplitHostPort works on it).
func remoteAddrOf(a netip.Addr) string {
	return net.JoinHostPort(a.String(), "0")
}
