package builtin

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// rateLimited serves app behind prefix (trusted_proxies as given, ""
// for the default) and ratelimit (local), as a pipeline "prefix ratelimit
// app" does, and returns the server's URL and the ratelimit filter.
func rateLimited(t *testing.T, trusted string, local ...string) (string, *ratelimit) {
	t.Helper()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	rl, err := ratelimitFactory(app, nil, localOf(local...))
	if err != nil {
		t.Fatal(err)
	}
	var pl []string
	if trusted != "" {
		pl = []string{"trusted_proxies", trusted}
	}
	pre, err := prefixFactory(rl, nil, localOf(pl...))
	if err != nil {
		t.Fatal(err)
	}
	return start(t, pre).URL, rl.(*ratelimit)
}

// limitedGet sends GET url with headers (name, value, ...) and returns the
// status and Retry-After.
func limitedGet(t *testing.T, c *http.Client, url string, headers ...string) (int, string) {
	t.Helper()
	req := newRequest(t, "GET", url, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	status, _, hdr := do(t, c, req)
	return status, hdr.Get("Retry-After")
}

// TestRateLimit: egg:paster#ratelimit gives each client burst requests and
// then 429 with Retry-After (issue 13.7); the client is ClientAddr, so a
// trusted proxy's X-Forwarded-For names it and an untrusted peer's is
// ignored; key = header:NAME buckets by that header's value; IPv6 clients
// share a bucket per ipv6_prefix network. rate = 1/h, so no token comes
// back while the test runs.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	type step struct {
		headers []string
		status  int
	}
	xff := func(a string) []string { return []string{"X-Forwarded-For", a} }
	tests := []struct {
		name    string
		trusted string
		local   []string
		steps   []step
	}{
		{"per client behind a trusted proxy", "", []string{"rate", "1/h", "burst", "2"}, []step{
			{xff("203.0.113.1"), 200}, {xff("203.0.113.1"), 200}, {xff("203.0.113.1"), 429},
			{xff("203.0.113.2"), 200}, {xff("203.0.113.2"), 200}, {xff("203.0.113.2"), 429},
			{xff("203.0.113.1"), 429},
		}},
		{"spoofed X-Forwarded-For from an untrusted peer", "192.0.2.0/24", []string{"rate", "1/h", "burst", "2"}, []step{
			{xff("203.0.113.1"), 200}, {xff("203.0.113.2"), 200}, {xff("203.0.113.3"), 429}, {nil, 429},
		}},
		{"default burst is N of rate", "", []string{"rate", "3/h"}, []step{
			{nil, 200}, {nil, 200}, {nil, 200}, {nil, 429},
		}},
		{"per header value", "", []string{"rate", "1/h", "burst", "1", "key", "header:X-Api-Key"}, []step{
			{[]string{"X-Api-Key", "k1", "X-Forwarded-For", "203.0.113.1"}, 200},
			{[]string{"X-Api-Key", "k1", "X-Forwarded-For", "203.0.113.2"}, 429},
			{[]string{"X-Api-Key", "k2", "X-Forwarded-For", "203.0.113.1"}, 200},
			{[]string{"X-Api-Key", strings.Repeat("k", 100)}, 200},
			{[]string{"X-Api-Key", strings.Repeat("k", 100)}, 429},
			{[]string{"X-Api-Key", strings.Repeat("k", 99) + "j"}, 200},
			{xff("203.0.113.1"), 200}, // no header: the client's bucket
			{xff("203.0.113.1"), 429},
		}},
		{"IPv6 per /64", "", []string{"rate", "1/h", "burst", "1"}, []step{
			{xff("2001:db8::1"), 200}, {xff("2001:db8::2"), 429}, {xff("2001:db8:0:1::1"), 200},
		}},
		{"IPv6 per address", "", []string{"rate", "1/h", "burst", "1", "ipv6_prefix", "128"}, []step{
			{xff("2001:db8::1"), 200}, {xff("2001:db8::2"), 200}, {xff("2001:db8::1"), 429},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url, _ := rateLimited(t, tt.trusted, tt.local...)
			for i, s := range tt.steps {
				status, retry := limitedGet(t, nil, url, s.headers...)
				if status != s.status {
					t.Fatalf("request %d (%q): %d, want %d", i, s.headers, status, s.status)
				}
				if status == 429 {
					// rate 1/h or 3/h: the next token is most of an hour away.
					if n, err := strconv.Atoi(retry); err != nil || n < 600 || n > 3600 {
						t.Errorf("request %d: Retry-After %q, want the seconds to the next token", i, retry)
					}
				} else if retry != "" {
					t.Errorf("request %d: Retry-After %q on %d", i, retry, status)
				}
			}
		})
	}
}

// TestRateLimitMemoryBound: a client rotating its address through a
// trusted proxy never makes the filter keep more than max_keys buckets,
// and the limit still holds for the client that sent last.
func TestRateLimitMemoryBound(t *testing.T) {
	t.Parallel()
	const maxKeys, clients = 50, 1000
	url, rl := rateLimited(t, "", "rate", "1/h", "burst", "1", "max_keys", strconv.Itoa(maxKeys))
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	for i := range clients {
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if status, _ := limitedGet(t, c, url, "X-Forwarded-For", addr); status != 200 {
			t.Fatalf("client %d: %d, want 200 (its first request)", i, status)
		}
		rl.mu.Lock()
		n := rl.buckets.Len()
		rl.mu.Unlock()
		if n > maxKeys {
			t.Fatalf("after %d clients the filter holds %d buckets, more than max_keys = %d", i+1, n, maxKeys)
		}
	}
	last := fmt.Sprintf("10.%d.%d.%d", (clients-1)>>16&255, (clients-1)>>8&255, (clients-1)&255)
	if status, _ := limitedGet(t, c, url, "X-Forwarded-For", last); status != 429 {
		t.Errorf("the last client's second request: %d, want 429", status)
	}
}

// TestRateLimitErrors: bad values fail at load, naming the key.
func TestRateLimitErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		local    []string
		key, err string
	}{
		{[]string{"rate", "10"}, "rate", "not a rate"},
		{[]string{"rate", "ten/s"}, "rate", "not a rate"},
		{[]string{"rate", "0/s"}, "rate", "not a rate"},
		{[]string{"rate", "-1/s"}, "rate", "not a rate"},
		{[]string{"rate", "5/fortnight"}, "rate", "not a rate"},
		{[]string{"rate", "5/-1s"}, "rate", "not a rate"},
		{[]string{"rate", " "}, "rate", "required"},
		{[]string{"rate", "10/s", "burst", "0"}, "burst", "more than 0"},
		{[]string{"rate", "10/s", "burst", "many"}, "burst", "many"},
		{[]string{"rate", "10/s", "max_keys", "-5"}, "max_keys", "more than 0"},
		{[]string{"rate", "10/s", "ipv6_prefix", "129"}, "ipv6_prefix", "128"},
		{[]string{"rate", "10/s", "ipv6_prefix", "0"}, "ipv6_prefix", "more than 0"},
		{[]string{"rate", "10/s", "key", "cookie:session"}, "key", "neither client nor header:NAME"},
		{[]string{"rate", "10/s", "key", "header:"}, "key", "not a header name"},
		{[]string{"rate", "10/s", "key", "header:X Api"}, "key", "not a header name"},
	}
	for _, tt := range tests {
		_, err := ratelimitFactory(http.NotFoundHandler(), nil, localOf(tt.local...))
		wantErr(t, err, tt.key, tt.err)
	}
	for _, ok := range []string{"10/s", "100/m", "0.5/s", "5/10s", "1/h", "3 / MIN"} {
		if _, err := ratelimitFactory(http.NotFoundHandler(), nil, localOf("rate", ok)); err != nil {
			t.Errorf("rate = %s: %v", ok, err)
		}
	}
}
