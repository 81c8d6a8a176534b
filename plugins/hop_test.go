package plugins

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner/observe"
)

// TestHopMetrics: requests the host hands to plugin processes are measured
// in the observe.Registry of their context, as paster serve has it: the
// hop's latency histogram and the request and response body bytes, by the
// plugin's dist (issue 12.5). Bodies of known length and chunked ones count
// alike, and a WebSocket still upgrades through the measuring writer.
// Requests that come from a server inside a plugin count too, their bodies
// passed on whole or streamed.
func TestHopMetrics(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, pApp := probeApp(t, h, "hop")
	d, err := h.Egg("wsecho", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	wsApp, err := d.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	reg := observe.New()
	probe := serve(t, observe.Instrument(reg, "probe", pApp))
	ws := serve(t, observe.Instrument(reg, "ws", wsApp))

	post := func(path string, body io.Reader) string {
		t.Helper()
		resp, err := http.Post(probe.URL+path, "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d %v", path, resp.StatusCode, err)
		}
		return string(b)
	}
	if got := post("/echo", bytes.NewReader(make([]byte, 10000))); len(got) != 10000 {
		t.Errorf("/echo answered %d bytes, want 10000", len(got))
	}
	// A reader of unknown length: the body goes chunked.
	if got := post("/count", struct{ io.Reader }{strings.NewReader(strings.Repeat("x", 7000))}); got != "7000" {
		t.Errorf("/count answered %q, want 7000", got)
	}
	if code, body := get(t, probe.URL+"/big?n=5000"); code != 200 || len(body) != 5000 {
		t.Errorf("/big: %d, %d bytes", code, len(body))
	}

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ws.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != "hello" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	c.Close()

	scrapeUntil(t, reg, `paster_plugin_hop_duration_seconds_count{dist="wsecho"} 1`)
	// The request is counted once its handler returned, which may be after
	// the hop ended.
	metrics := scrapeUntil(t, reg, `paster_http_requests_total{app="ws",code="101"} 1`)
	for _, want := range []string{
		`paster_plugin_hop_duration_seconds_count{dist="ptest"} 3`,
		`paster_plugin_hop_sent_bytes_total{dist="ptest"} 17000`,
		`paster_plugin_hop_received_bytes_total{dist="ptest"} 15004`,
		`paster_plugin_hop_duration_seconds_bucket{dist="ptest",le="+Inf"} 3`,
		`paster_http_requests_total{app="ws",code="101"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}

	// The same app served by a server inside the hello plugin: the host
	// gets the requests from that plugin and hands them to ptest.
	via := observe.New()
	addr := helloServer(t, h, observe.Instrument(via, "via", pApp))
	testsync.WaitFor(t, "the plugin server to answer", func() bool {
		resp, err := http.Get("http://" + addr + "/echo") // a hop without bytes
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	probe.URL = "http://" + addr
	if got := post("/echo", strings.NewReader(strings.Repeat("s", 300))); len(got) != 300 {
		t.Errorf("/echo via the plugin server answered %d bytes, want 300", len(got))
	}
	if got := post("/count", struct{ io.Reader }{strings.NewReader(strings.Repeat("x", 200<<10))}); got != "204800" {
		t.Errorf("/count via the plugin server answered %q, want 204800", got)
	}
	metrics = scrapeUntil(t, via, `paster_plugin_hop_duration_seconds_count{dist="ptest"} 3`)
	for _, want := range []string{
		`paster_plugin_hop_sent_bytes_total{dist="ptest"} 205100`,
		`paster_plugin_hop_received_bytes_total{dist="ptest"} 306`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics via the plugin server lack %s", want)
		}
	}
}

// scrapeUntil scrapes reg until its exposition has line, and returns it.
func scrapeUntil(t *testing.T, reg *observe.Registry, line string) string {
	t.Helper()
	var metrics string
	testsync.WaitFor(t, line, func() bool {
		rec := httptest.NewRecorder()
		reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		metrics = rec.Body.String()
		return strings.Contains(metrics, line+"\n")
	})
	return metrics
}
