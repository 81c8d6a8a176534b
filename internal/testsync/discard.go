package testsync

import "net/http"

// DiscardWriter is an http.ResponseWriter that keeps nothing but its
// header map, for benchmarks of handlers that wrap an app, so that they
// measure the wrapper and not a recorder beneath it.
type DiscardWriter struct{ H http.Header }

// Header returns the header map (reused from request to request).
func (w DiscardWriter) Header() http.Header { return w.H }

// Write discards p.
func (w DiscardWriter) Write(p []byte) (int, error) { return len(p), nil }

// WriteHeader does nothing.
func (w DiscardWriter) WriteHeader(int) {}
