package observe

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// BenchmarkInstrument is the per-request cost paster serve adds to every
// app for /metrics (requests by app and code, latency, in flight), on all
// CPUs at once: compare allocs/op and ns/op before and after a change.
func BenchmarkInstrument(b *testing.B) {
	body := []byte("Hello, world!\n")
	app := Instrument(New(), "main", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(body)
	}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := testsync.DiscardWriter{H: http.Header{}}
		req := httptest.NewRequest("GET", "/", nil)
		for pb.Next() {
			app.ServeHTTP(w, req)
		}
	})
}
