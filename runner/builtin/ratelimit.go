package builtin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/time/rate"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// ratelimitKeys are the local keys egg:paster#ratelimit reads (Keys).
var ratelimitKeys = []string{"rate", "burst", "key", "ipv6_prefix", "max_keys"}

// ratelimitFactory is egg:paster#ratelimit, a filter that limits how often
// each client may call the app it wraps: a token bucket (golang.org/x/time/rate)
// per client. Keys:
//
//	rate         required: N/s, N/m, N/h or N/DURATION (10/s, 100/m,
//	             5/10s); N > 0, fractions allowed; tokens come back at
//	             this rate
//	burst        the bucket's size, requests a rested client may send at
//	             once (default N of rate, at least 1)
//	key          whose bucket a request takes from: client (default), the
//	             client address, ClientAddr(r), so a prefix filter's
//	             trusted_proxies apply; or header:NAME (header:X-Api-Key),
//	             that header's value, and the client address for a
//	             request without it
//	ipv6_prefix  IPv6 clients share a bucket per network of this length
//	             (default 64, 1 to 128), since one host commonly holds a
//	             whole /64
//	max_keys     the most buckets kept (default 10000); past it the least
//	             recently used is dropped
//
// Behind a reverse proxy, stand the filter inside egg:paster#prefix
// (pipeline = prefix ratelimit app), which derives the client from
// X-Forwarded-For; outside it, every request would count as the proxy's.
//
// A request finding its bucket empty is answered 429 Too Many Requests
// with Retry-After (whole seconds until a token is back, at least 1),
// without calling the app; the others go on and take a token. A request
// the server rejects itself (413, 431) takes none. Clients whose address is
// unknown share one bucket; header values longer than 64 bytes are kept
// as their SHA-256.
//
// Memory is bounded by max_keys whatever clients send: a client rotating
// addresses or header values only evicts the buckets used longest ago.
// A dropped bucket is recreated full, so max_keys should exceed the
// number of clients active within burst/rate (an idle bucket is full by
// then and dropping it loses nothing).
//
// Errors, naming the file, line, section and key: rate missing or not
// N/unit, burst, max_keys or ipv6_prefix not a positive integer (or
// ipv6_prefix over 128), key neither client nor header:NAME with a valid
// header name.
//
//	[filter:ratelimit]
//	use = egg:paster#ratelimit
//	rate = 10/s
//	burst = 20
//	key = client
//	max_keys = 10000
func ratelimitFactory(next http.Handler, _ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("ratelimit", local, ratelimitKeys)
	v, ok := local.Lookup("rate")
	if !ok || strings.TrimSpace(v) == "" {
		return nil, local.Errorf("rate", "required: requests allowed per unit of time (10/s, 100/m, 5/10s)")
	}
	limit, n, err := parseRate(v)
	if err != nil {
		return nil, local.Errorf("rate", "%w", err)
	}
	f := &ratelimit{next: next, limit: limit}
	if f.burst, err = positiveInt(local, "burst", max(1, int(math.Ceil(n)))); err != nil {
		return nil, err
	}
	maxKeys, err := positiveInt(local, "max_keys", 10000)
	if err != nil {
		return nil, err
	}
	if f.v6bits, err = positiveInt(local, "ipv6_prefix", 64); err != nil {
		return nil, err
	}
	if f.v6bits > 128 {
		return nil, local.Errorf("ipv6_prefix", "%d is longer than an IPv6 address (128)", f.v6bits)
	}
	switch key := strings.TrimSpace(local.Get("key")); {
	case key == "" || key == "client":
	case strings.HasPrefix(key, "header:"):
		f.header = strings.TrimSpace(strings.TrimPrefix(key, "header:"))
		if !httpguts.ValidHeaderFieldName(f.header) {
			return nil, local.Errorf("key", "%q is not a header name", f.header)
		}
	default:
		return nil, local.Errorf("key", "%q is neither client nor header:NAME", key)
	}
	// simplelru (not the locked lru.Cache) because lookup and insertion
	// must be one step under the filter's own lock.
	f.buckets, _ = simplelru.NewLRU[string, *rate.Limiter](maxKeys, nil)
	return f, nil
}

// parseRate reads N/unit: the limit in tokens a second and N.
func parseRate(v string) (rate.Limit, float64, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(v), "/")
	if !ok {
		return 0, 0, errRate(v)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n <= 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, 0, errRate(v)
	}
	var per time.Duration
	switch unit = strings.ToLower(strings.TrimSpace(unit)); unit {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		if per, err = time.ParseDuration(unit); err != nil || per <= 0 {
			return 0, 0, errRate(v)
		}
	}
	return rate.Limit(n / per.Seconds()), n, nil
}

func errRate(v string) error {
	return fmt.Errorf("%q is not a rate (want N/s, N/m, N/h or N/DURATION with N > 0: 10/s, 100/m, 5/10s)", v)
}

// positiveInt reads key as an integer > 0, def when unset.
func positiveInt(local entrypoints.Local, key string, def int) (int, error) {
	n, err := local.Int(key, def)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, local.Errorf(key, "must be more than 0, not %d", n)
	}
	return n, nil
}

type ratelimit struct {
	next   http.Handler
	limit  rate.Limit
	burst  int
	header string // "" for key = client
	v6bits int

	mu      sync.Mutex
	buckets *simplelru.LRU[string, *rate.Limiter]
}

// ObserveRejected passes a request the server answered itself on
// (runner.RejectObserver); it takes no token.
func (f *ratelimit) ObserveRejected(r *http.Request, code int) {
	runner.ObserveRejected(f.next, r, code)
}

func (f *ratelimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	key := f.key(r)
	f.mu.Lock()
	lim, ok := f.buckets.Get(key)
	if !ok {
		lim = rate.NewLimiter(f.limit, f.burst)
		f.buckets.Add(key, lim)
	}
	f.mu.Unlock()
	if lim.AllowN(now, 1) {
		f.next.ServeHTTP(w, r)
		return
	}
	wait := (1 - lim.TokensAt(now)) / float64(f.limit)
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait)))))
	http.Error(w, "429 Too Many Requests", http.StatusTooManyRequests)
}

// key names r's bucket: "h " and the header's value ("H " and its SHA-256
// when longer than 64 bytes), else
// "c " and the client's address (IPv6 masked to ipv6_prefix), "c ?" when
// unknown.
func (f *ratelimit) key(r *http.Request) string {
	if f.header != "" {
		if v := r.Header.Get(f.header); v != "" {
			if len(v) > 64 {
				sum := sha256.Sum256([]byte(v))
				return "H " + hex.EncodeToString(sum[:])
			}
			return "h " + v
		}
	}
	a := ClientAddr(r)
	switch {
	case !a.IsValid():
		return "c ?"
	case a.Is6():
		if p, err := a.Prefix(f.v6bits); err == nil {
			return "c " + p.String()
		}
	}
	return "c " + a.String()
}
