// Command benchserve serves the benchmark's hello handler as one of the
// targets bench/run.sh compares, on a free loopback port, and prints
// "listening ADDR" as its first line on stdout once it accepts. It serves
// until SIGINT or SIGTERM.
//
//	benchserve -target plain        net/http's http.Server, nothing else
//	benchserve -target paster-http  the built-in dist's http runner
//	                                (egg:paster#http) with default settings
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner/builtin"
)

var helloBody = []byte("Hello, world!\n")

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(helloBody)
}

func main() {
	target := flag.String("target", "plain", "what serves: plain or paster-http")
	host := flag.String("host", "127.0.0.1", "address to bind")
	flag.Parse()
	logger := hclog.New(&hclog.LoggerOptions{Name: "benchserve", Output: os.Stderr, Level: hclog.Warn})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch *target {
	case "plain":
		err = servePlain(ctx, *host)
	case "paster-http":
		err = servePaster(ctx, *host)
	default:
		err = fmt.Errorf("unknown target %q (plain, paster-http)", *target)
	}
	if err != nil {
		logger.Error("serving failed", "target", *target, "error", err)
		os.Exit(1)
	}
}

func servePlain(ctx context.Context, host string) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("listening %s\n", ln.Addr())
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// addrWriter passes log output to stderr and prints the address of the
// runner's "serving" line on stdout, once.
type addrWriter struct{ once sync.Once }

var servingAddr = regexp.MustCompile(`serving: addr=(\S+)`)

func (a *addrWriter) Write(p []byte) (int, error) {
	if m := servingAddr.FindSubmatch(p); m != nil {
		a.once.Do(func() { fmt.Printf("listening %s\n", m[1]) })
	}
	return os.Stderr.Write(p)
}

func servePaster(ctx context.Context, host string) error {
	hclog.SetDefault(hclog.New(&hclog.LoggerOptions{Name: "paster", Output: &addrWriter{}, Level: hclog.Info}))
	run := builtin.Dist.Runners["http"]
	return run(ctx, http.HandlerFunc(hello), map[string]string{}, entrypoints.NewLocal("host", host, "port", "0"))
}
