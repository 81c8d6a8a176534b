package observe

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/paster-dev/paster/runner"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxDists bounds the number of distinct dist labels of the plugin hop
// metrics; later dists are recorded as "other".
const MaxDists = 32

// HopBuckets are the upper bounds, in seconds, of the plugin hop latency
// histogram: finer than Buckets at the low end, where the hop's own cost
// shows, and reaching a minute for long-polls parked inside a plugin.
var HopBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// hopVecs are the plugin hop metrics, by dist.
type hopVecs struct {
	duration       *prometheus.HistogramVec
	sent, received *prometheus.CounterVec
}

func newHopVecs() hopVecs {
	return hopVecs{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "paster_plugin_hop_duration_seconds",
			Help:    "Time from handing a request to a plugin process until its response ended, by plugin dist (the plugin app's own time included).",
			Buckets: HopBuckets,
		}, []string{"dist"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paster_plugin_hop_sent_bytes_total",
			Help: "Request body bytes sent to plugin processes, by plugin dist.",
		}, []string{"dist"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paster_plugin_hop_received_bytes_total",
			Help: "Response body bytes received from plugin processes, by plugin dist.",
		}, []string{"dist"}),
	}
}

// hopMetrics caches one dist's series.
type hopMetrics struct {
	duration       prometheus.Observer
	sent, received prometheus.Counter
}

// dist returns the series of dist, "other" past MaxDists.
func (r *Registry) dist(dist string) *hopMetrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.dists[dist]
	if m == nil {
		if len(r.dists) >= MaxDists {
			dist = "other"
			m = r.dists[dist]
		}
		if m == nil {
			m = &hopMetrics{
				duration: r.hop.duration.WithLabelValues(dist),
				sent:     r.hop.sent.WithLabelValues(dist),
				received: r.hop.received.WithLabelValues(dist),
			}
			r.dists[dist] = m
		}
	}
	return m
}

// Hop is one request handed to a process of a plugin, being measured
// (StartHop). A nil *Hop measures nothing: its methods hand back what they
// are given.
type Hop struct {
	m     *hopMetrics
	start time.Time
	w     countedWriter
}

// StartHop begins measuring one request the host hands to a process of
// plugin dist, in the Registry of ctx; without one it returns nil. Pass the
// response writer through Writer and the request through Body (or count a
// body passed on whole with Sent), and call End once the exchange is over.
func StartHop(ctx context.Context, dist string) *Hop {
	reg := From(ctx)
	if reg == nil {
		return nil
	}
	m := reg.dist(dist)
	return &Hop{m: m, start: time.Now(), w: countedWriter{n: m.received}}
}

// Writer returns w counting the response body bytes written through it.
// Bytes of a hijacked connection (an upgrade) are not counted. One Hop
// gives one writer.
func (h *Hop) Writer(w http.ResponseWriter) http.ResponseWriter {
	if h == nil {
		return w
	}
	h.w.ResponseWriter = w
	return &h.w
}

// Body returns req, or a copy of it whose body counts the bytes read from
// it when it has one.
func (h *Hop) Body(req *http.Request) *http.Request {
	if h == nil || req.Body == nil || req.Body == http.NoBody || (req.ContentLength == 0 && len(req.TransferEncoding) == 0) {
		return req
	}
	r2 := new(http.Request)
	*r2 = *req
	r2.Body = &countedBody{ReadCloser: req.Body, n: h.m.sent}
	return r2
}

// Sent counts n request body bytes passed on without being read through
// Body.
func (h *Hop) Sent(n int) {
	if h != nil {
		h.m.sent.Add(float64(n))
	}
}

// End records the hop's duration, from StartHop until now (a hijacked
// connection's is the tunnel's).
func (h *Hop) End() {
	if h != nil {
		h.m.duration.Observe(time.Since(h.start).Seconds())
	}
}

// countedBody counts the bytes read into n as they are read.
type countedBody struct {
	io.ReadCloser
	n prometheus.Counter
}

func (b *countedBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	if k > 0 {
		b.n.Add(float64(k))
	}
	return k, err
}

// countedWriter counts the bytes written into n as they are written. It
// keeps Flush and Hijack, and unwraps for http.ResponseController.
type countedWriter struct {
	runner.ResponseWrapper
	n prometheus.Counter
}

func (w *countedWriter) Write(p []byte) (int, error) {
	k, err := w.ResponseWriter.Write(p)
	if k > 0 {
		w.n.Add(float64(k))
	}
	return k, err
}
