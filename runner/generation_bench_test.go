package runner

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// BenchmarkMount is the per-request cost of serving through a Front and
// its Mount (paster serve's reloadable app), on all CPUs at once.
func BenchmarkMount(b *testing.B) {
	core := NewCore(CoreOptions{})
	defer core.Close()
	front := NewFront(NewMount(http.HandlerFunc(hello), core, nil))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := testsync.DiscardWriter{H: http.Header{}}
		req := httptest.NewRequest("GET", "/", nil)
		for pb.Next() {
			front.ServeHTTP(w, req)
		}
	})
}
