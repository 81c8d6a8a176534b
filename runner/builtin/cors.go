package builtin

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/rs/cors"
	"golang.org/x/net/http/httpguts"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// corsKeys are the local keys egg:paster#cors reads (Keys).
var corsKeys = []string{"origins", "methods", "headers", "expose_headers", "credentials", "max_age"}

// corsFactory is egg:paster#cors, a filter that answers CORS (Cross-Origin
// Resource Sharing) for the app it wraps, with github.com/rs/cors. Keys,
// lists separated by spaces or commas:
//
//	origins         required: the origins allowed, as browsers send them
//	                (https://app.example.com, http://localhost:8080), one
//	                * standing for any characters (https://*.example.com),
//	                or * alone for any origin
//	methods         methods allowed (default GET HEAD POST); upper-cased
//	headers         request headers allowed beyond the CORS-safelisted ones
//	                (default Accept Content-Type X-Requested-With), or *
//	expose_headers  response headers scripts may read (default none)
//	credentials     bool, default false: allow cookies and HTTP auth
//	                (Access-Control-Allow-Credentials: true)
//	max_age         how long browsers may cache a preflight's answer (a
//	                duration, whole seconds are sent; default: not sent,
//	                browsers use 5 s)
//
// A preflight (OPTIONS with Access-Control-Request-Method) is answered 204
// by the filter, without calling the app: with Access-Control-Allow-Origin
// (the request's Origin, or * when origins is *), -Methods, -Headers,
// -Credentials and -Max-Age when the origin, method and headers are
// allowed, and with none of them when not (the browser then refuses the
// request). Other requests go to the app; from an allowed origin and with
// an allowed method they carry Access-Control-Allow-Origin,
// -Expose-Headers and -Credentials. Every response gets "Vary: Origin"
// (preflights also vary on the two request headers), so that caches keep
// the answers for different origins apart.
//
// Errors, naming the file, line, section and key: origins missing or
// holding something that is not an origin (a path, a trailing slash, no
// scheme), more than one * in an origin, a method or header that is not a
// token, credentials = true with origins = * (browsers refuse that
// combination, and echoing any origin with credentials would let every
// site read the user's data), a bad credentials or max_age.
//
//	[filter:cors]
//	use = egg:paster#cors
//	origins = https://app.example.com https://*.example.org
//	methods = GET POST PUT DELETE
//	headers = Content-Type Authorization
//	expose_headers = X-Request-ID
//	credentials = true
//	max_age = 10m
func corsFactory(next http.Handler, _ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("cors", local, corsKeys)
	var opts cors.Options
	origins := listOf(local, "origins")
	if len(origins) == 0 {
		return nil, local.Errorf("origins", "required: the origins allowed (https://app.example.com), or *")
	}
	for _, o := range origins {
		if o == "*" {
			continue
		}
		if err := checkOrigin(o); err != "" {
			return nil, local.Errorf("origins", "%q %s", o, err)
		}
	}
	opts.AllowedOrigins = origins
	for _, m := range listOf(local, "methods") {
		if !httpguts.ValidHeaderFieldName(m) { // a method is a token too
			return nil, local.Errorf("methods", "%q is not a method", m)
		}
		opts.AllowedMethods = append(opts.AllowedMethods, strings.ToUpper(m))
	}
	for _, key := range []string{"headers", "expose_headers"} {
		for _, h := range listOf(local, key) {
			if !httpguts.ValidHeaderFieldName(h) || (h == "*" && key == "expose_headers") {
				return nil, local.Errorf(key, "%q is not a header name", h)
			}
		}
	}
	opts.AllowedHeaders = listOf(local, "headers")
	opts.ExposedHeaders = listOf(local, "expose_headers")
	var err error
	if opts.AllowCredentials, err = local.Bool("credentials", false); err != nil {
		return nil, err
	}
	if opts.AllowCredentials && slices.Contains(origins, "*") {
		return nil, local.Errorf("credentials", "true with origins = * would let every site read what the user's cookies open: name the origins")
	}
	age, err := local.Duration("max_age", 0)
	if err != nil {
		return nil, err
	}
	if age < 0 {
		return nil, local.Errorf("max_age", "must not be negative, not %s", age)
	}
	opts.MaxAge = int(age.Seconds())
	if age > 0 && opts.MaxAge == 0 {
		opts.MaxAge = -1 // under a second: send 0, not the browser's default
	}
	return &corsFilter{next: next, h: cors.New(opts).Handler(next)}, nil
}

type corsFilter struct {
	next http.Handler // the app
	h    http.Handler // rs/cors around it
}

func (c *corsFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.h.ServeHTTP(w, r) }

// ObserveRejected passes a request the server answered itself on
// (runner.RejectObserver).
func (c *corsFilter) ObserveRejected(r *http.Request, code int) {
	runner.ObserveRejected(c.next, r, code)
}

// checkOrigin returns what is wrong with o as an origin pattern
// (scheme://host[:port], at most one *), or "".
func checkOrigin(o string) string {
	if strings.Count(o, "*") > 1 {
		return "has more than one *"
	}
	u, err := url.Parse(strings.Replace(o, "*", "wildcard", 1))
	switch {
	case err != nil:
		return "is not an origin: " + err.Error()
	case u.Scheme == "" || u.Host == "":
		return "is not an origin (want scheme://host[:port])"
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#"):
		return "is not an origin: only scheme://host[:port], without a path or trailing slash"
	}
	return ""
}
