package plugins

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/examples/hello"
)

// BenchmarkHello serves the hello app three ways under the same load (HTTP/1.1
// keep-alive clients in this process, 8 concurrent on 2 cores):
//
//   - inprocess: the app compiled in;
//   - plugin: the app in the paster-plugin-hello process, through Host;
//   - reverseproxy: httputil.ReverseProxy in front of the same app served by
//     net/http in another process (the hello plugin's http-runner) on a unix
//     socket; the alternative users would otherwise pick.
//
// Compare ns/op across sub-benchmarks of one run: the goal is plugin <=
// reverseproxy.
func BenchmarkHello(b *testing.B) {
	h := NewHost(HostOptions{PluginDirs: []string{binDir}, Logger: hclog.NewNullLogger()})
	defer h.Close(context.Background())
	d, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		b.Fatal(err)
	}
	pluginApp, err := d.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		b.Fatal(err)
	}
	localApp, err := hello.Dist.Apps["main"](nil, entrypoints.Local{})
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(b.TempDir(), "hello.sock")
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() {
		runDone <- d.Runners["http-runner"](ctx, pluginApp, nil, entrypoints.NewLocal("listen", "unix:"+sock))
	}()
	defer func() { cancel(); <-runDone }()
	uds := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 64,
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("runner did not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	target, _ := url.Parse("http://hello")
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = uds

	for _, c := range []struct {
		name string
		h    http.Handler
	}{
		{"inprocess", localApp},
		{"plugin", pluginApp},
		{"reverseproxy", rp},
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := httptest.NewServer(c.h)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(srv.URL)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
