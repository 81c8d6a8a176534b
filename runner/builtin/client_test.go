package builtin

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestForwardedTrust: the client address that the access log, pprof's
// allow check and apps see is derived in one way (issue 8.6): X-Forwarded-For
// is read only from a trusted peer (trusted_proxies, default loopback), from
// the right, skipping trusted hops; from an untrusted peer every
// X-Forwarded-* header is ignored. Before, the first X-Forwarded-For value
// (the client's own) was taken, so a spoofed header opened pprof's allow
// list. The test's peer is always 127.0.0.1; trusted_proxies without
// loopback makes it an untrusted one.
func TestForwardedTrust(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		trusted string   // trusted_proxies; "" for the default
		xff     []string // X-Forwarded-For header lines
		client  string   // the derived address ("-": unknown)
		host    string   // r.Host the app sees ("" for the listener's)
	}{
		{name: "no header", client: "127.0.0.1", host: "public.example"},
		{name: "spoofed from untrusted peer", trusted: "192.0.2.0/24", xff: []string{"10.9.9.9"}, client: "127.0.0.1"},
		{name: "spoofed chain from untrusted peer", trusted: "192.0.2.0/24", xff: []string{"10.9.9.9, 203.0.113.7"}, client: "127.0.0.1"},
		{name: "real proxy appends the client", xff: []string{"10.9.9.9, 203.0.113.7"}, client: "203.0.113.7", host: "public.example"},
		{name: "one hop", xff: []string{"203.0.113.7"}, client: "203.0.113.7", host: "public.example"},
		{name: "allowed client through a proxy", xff: []string{"10.9.9.9"}, client: "10.9.9.9", host: "public.example"},
		{name: "header lines joined", xff: []string{"10.9.9.9", "203.0.113.7"}, client: "203.0.113.7", host: "public.example"},
		{name: "trusted hops skipped", trusted: "127.0.0.0/8, 10.0.0.0/8", xff: []string{"6.6.6.6, 198.51.100.1, 10.1.1.1, 10.2.2.2"}, client: "198.51.100.1", host: "public.example"},
		{name: "all hops trusted", trusted: "127.0.0.0/8 10.0.0.0/8", xff: []string{"10.1.1.1, 10.2.2.2"}, client: "10.1.1.1", host: "public.example"},
		{name: "ports and brackets", xff: []string{"[2001:db8::1]:4711, 198.51.100.1:999"}, client: "198.51.100.1", host: "public.example"},
		{name: "ipv6 client", xff: []string{"2001:db8::1"}, client: "2001:db8::1", host: "public.example"},
		{name: "garbage left of the client is not read", xff: []string{"bogus, 198.51.100.1"}, client: "198.51.100.1", host: "public.example"},
		{name: "garbage from a trusted hop", xff: []string{"198.51.100.1, bogus"}, client: "-", host: "public.example"},
	}
	for _, tt := range tests {
		for _, logOutside := range []bool{true, false} {
			name := tt.name + map[bool]string{true: " (log outside prefix)", false: " (log inside prefix)"}[logOutside]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				logFile := filepath.Join(t.TempDir(), "access.log")
				who := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					host, _, _ := net.SplitHostPort(r.RemoteAddr)
					w.Write([]byte(host + "|" + r.Host + "|" + r.Header.Get("X-Forwarded-For")))
				})
				pp, err := pprofFactory(nil, localOf("allow", "10.0.0.0/8"))
				if err != nil {
					t.Fatal(err)
				}
				h := mounted(t, map[string]http.Handler{"/who": who, "/pprof": pp})
				prefixLocal := []string{}
				if tt.trusted != "" {
					prefixLocal = append(prefixLocal, "trusted_proxies", tt.trusted)
				}
				wrapPrefix := func(next http.Handler) http.Handler {
					h, err := prefixFactory(next, nil, localOf(prefixLocal...))
					if err != nil {
						t.Fatal(err)
					}
					return h
				}
				wrapLog := func(next http.Handler) http.Handler {
					h, err := transloggerFactory(next, nil, localOf("format", "%h", "output", logFile))
					if err != nil {
						t.Fatal(err)
					}
					return h
				}
				if logOutside {
					h = wrapLog(wrapPrefix(h))
				} else {
					h = wrapPrefix(wrapLog(h))
				}
				srv := start(t, h)
				get := func(path string) (int, string) {
					req := newRequest(t, "GET", srv.URL+path, nil)
					for _, v := range tt.xff {
						req.Header.Add("X-Forwarded-For", v)
					}
					req.Header.Set("X-Forwarded-Host", "public.example")
					code, body, _ := do(t, nil, req)
					return code, body
				}
				_, body := get("/who")
				parts := strings.SplitN(body, "|", 3)
				wantRemote := tt.client
				if wantRemote == "-" {
					wantRemote = "127.0.0.1" // unknown: r.RemoteAddr stays the peer
				}
				if parts[0] != wantRemote {
					t.Errorf("app sees RemoteAddr %s, want %s", parts[0], wantRemote)
				}
				if tt.host == "" && parts[1] == "public.example" {
					t.Errorf("X-Forwarded-Host from an untrusted peer was used")
				}
				if tt.host != "" && parts[1] != tt.host {
					t.Errorf("app sees Host %q, want %q", parts[1], tt.host)
				}
				if parts[2] != "" {
					t.Errorf("X-Forwarded-For %q reached the app", parts[2])
				}
				code, _ := get("/pprof/cmdline")
				wantCode := http.StatusForbidden
				if strings.HasPrefix(tt.client, "10.") {
					wantCode = http.StatusOK
				}
				if code != wantCode {
					t.Errorf("pprof (allow = 10.0.0.0/8): %d, want %d", code, wantCode)
				}
				b, err := os.ReadFile(logFile)
				if err != nil {
					t.Fatal(err)
				}
				if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 2 || lines[0] != tt.client || lines[1] != tt.client {
					t.Errorf("access log %q, want %s twice", lines, tt.client)
				}
			})
		}
	}
}

// TestUnixSocketPeer: a request that came in on a unix socket has a peer
// with no address — nginx on the same machine, with access to the socket
// file. The default trusted_proxies and allow lists trust it ("unix"), so
// X-Forwarded-For names the client behind it and pprof and health details
// answer local callers; a list without "unix" does not. Before, such a
// peer was never trusted: the client was unknown behind nginx, and pprof
// refused the machine's own operator.
func TestUnixSocketPeer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, trusted, allow string
		xff                  string
		client               string // "-": unknown
		pprof                int
	}{
		{name: "defaults, through nginx", xff: "203.0.113.7", client: "203.0.113.7", pprof: http.StatusForbidden},
		{name: "defaults, a local caller", client: "-", pprof: http.StatusOK},
		{name: "allowed client through nginx", allow: "10.0.0.0/8", xff: "10.1.2.3", client: "10.1.2.3", pprof: http.StatusOK},
		{name: "unix not trusted", trusted: "127.0.0.0/8", xff: "10.1.2.3", client: "-", pprof: http.StatusForbidden},
		{name: "unix not allowed", allow: "127.0.0.0/8", client: "-", pprof: http.StatusForbidden},
		{name: "listed explicitly", trusted: "unix", allow: "unix 10.0.0.0/8", xff: "10.1.2.3", client: "10.1.2.3", pprof: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			who := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				a := ClientAddr(r)
				if !a.IsValid() {
					w.Write([]byte("-"))
					return
				}
				w.Write([]byte(a.String()))
			})
			var allow []string
			if tt.allow != "" {
				allow = []string{"allow", tt.allow}
			}
			pp, err := pprofFactory(nil, localOf(allow...))
			if err != nil {
				t.Fatal(err)
			}
			mux := mounted(t, map[string]http.Handler{"/who": who, "/pprof": pp})
			var trusted []string
			if tt.trusted != "" {
				trusted = []string{"trusted_proxies", tt.trusted}
			}
			h, err := prefixFactory(mux, nil, localOf(trusted...))
			if err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(t.TempDir(), "s.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: h}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}
			get := func(path string) (int, string) {
				req := newRequest(t, "GET", "http://paster"+path, nil)
				if tt.xff != "" {
					req.Header.Set("X-Forwarded-For", tt.xff)
				}
				code, body, _ := do(t, client, req)
				return code, body
			}
			if _, body := get("/who"); body != tt.client {
				t.Errorf("client %q, want %q", body, tt.client)
			}
			if code, _ := get("/pprof/cmdline"); code != tt.pprof {
				t.Errorf("pprof: %d, want %d", code, tt.pprof)
			}
		})
	}
}

// TestForwardedForLong: a trusted proxy passes on the X-Forwarded-For a
// client sent, with its own entry appended; up to max_header_bytes (1 MiB)
// of it. The client is found by walking the list from the right, without
// splitting the whole header first: that allocated about 50 bytes per byte
// of header (52 MB for 1 MiB of "1,") on every such request. Measured as
// bytes allocated in this process against a request carrying a header of
// the same size under another name; not parallel, so that other tests'
// allocations do not count.
func TestForwardedForLong(t *testing.T) {
	who := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(ClientAddr(r).String())) })
	h, err := prefixFactory(who, nil, localOf())
	if err != nil {
		t.Fatal(err)
	}
	srv := start(t, h)
	get := func(header, value string) (bytes uint64, body string) {
		req := newRequest(t, "GET", srv.URL+"/", nil)
		req.Header.Set(header, value)
		bytes = allocated(func() { _, body, _ = do(t, nil, req) })
		return bytes, body
	}
	tests := []struct {
		name, xff, client string
	}{
		{"client rightmost", strings.Repeat("1,", 500<<10) + "198.51.100.1", "198.51.100.1"},
		{"many trusted hops", "10.0.0.1" + strings.Repeat(",127.0.0.1", 100<<10), "10.0.0.1"},
	}
	for _, tt := range tests {
		base, _ := get("X-Padding", tt.xff)
		got, client := get("X-Forwarded-For", tt.xff)
		if client != tt.client {
			t.Errorf("%s: client %q, want %q", tt.name, client, tt.client)
		}
		if extra := int64(got) - int64(base); extra > 8<<20 {
			t.Errorf("%s: a %d-byte X-Forwarded-For cost %d bytes more than another header of that size", tt.name, len(tt.xff), extra)
		}
	}
}
