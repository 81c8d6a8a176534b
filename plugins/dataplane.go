package plugins

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
)

// The data plane (package transport's Mux): requests both ways and the
// plugin's Core calls cross a few unix socket pairs the host creates for
// each plugin process and hands it as inherited descriptors (wire.
// EnvDataFDs), so no socket file or broker round trip is involved. A
// plugin that does not say DataPlane in its manifest (an SDK from before
// it) is reached through gRPC streams instead, as before.

// dataConns is how many connections a plugin's data plane has. Exchanges
// are spread over them round-robin; each has one reader goroutine per side.
const dataConns = 2

// dataHandler serves what a plugin opens on its data plane: requests to
// the host's apps (a filter's next app, a server's app), and Core calls.
// A Core call a handler makes for a request runs in the host goroutine that
// forwards that request (transport.CallFor), so that a request parked in
// WaitForSignal holds no goroutine of the host's beyond the one an
// in-process request would; other calls run in the Mux's goroutines. A
// WaitForSignal on a Core that can (runner.SignalFuncWaiter) does not even
// hold that goroutine: it is answered later (transport.ServeCallLater) by
// the goroutine that signals, and the request's goes back to waiting for
// the plugin's response.
func (p *proc) dataHandler(cs *coreService) transport.Handler {
	lookup := observeRejects(p.h.refs.app)
	calls := cs.calls()
	return func(ctx context.Context, method string, _ uint64, x *transport.Exchange) error {
		if method == "" {
			return transport.Serve(ctx, x, lookup, p.log)
		}
		if method == "WaitForSignal" {
			return transport.ServeCallLater(ctx, x, func(ctx context.Context, data []byte, reply func([]byte, error)) {
				var in coreCall
				if err := in.decode(data); err != nil {
					reply(nil, err)
					return
				}
				cs.waitForSignal(ctx, in, func(out coreReply) { reply(out.appendTo(nil), nil) })
			})
		}
		f := calls[method]
		return transport.ServeCall(ctx, x, func(ctx context.Context, data []byte) ([]byte, error) {
			if f == nil {
				return nil, fmt.Errorf("no method %q on the host", method)
			}
			var in coreCall
			if err := in.decode(data); err != nil {
				return nil, err
			}
			out := cs.call(ctx, f, in)
			return out.appendTo(nil), nil
		})
	}
}

// dataFromEnv connects the SDK to the data-plane descriptors the host
// passed, with their shared memory when it passed that too, or returns
// nil (a host from before the data plane, or a test that runs the plugin
// by hand).
func (s *sdk) dataFromEnv(log hclog.Logger) *transport.Mux {
	files := inheritedFiles(wire.EnvDataFDs, "paster data plane", log)
	arenas := inheritedFiles(wire.EnvDataArenaFDs, "paster data-plane arena", log)
	var conns []net.Conn
	var mapped []*os.File // arenas[i] of conns[i]
	for i, file := range files {
		var arena *os.File
		if i < len(arenas) {
			arena = arenas[i]
		}
		if file == nil {
			continue
		}
		c, err := net.FileConn(file)
		file.Close()
		if err != nil {
			log.Warn("bad data-plane descriptor from the host", "name", file.Name(), "error", err)
			continue
		}
		conns = append(conns, c)
		mapped = append(mapped, arena)
	}
	defer func() {
		for _, f := range arenas {
			if f != nil {
				f.Close() // mapped by NewMux, or not used
			}
		}
	}()
	if len(conns) == 0 {
		return nil
	}
	return transport.NewMux(conns, false, s.serveData, log, mapped...)
}

// inheritedFiles returns the descriptors the host listed in the
// environment variable env (and removes it), nil for a bad one.
func inheritedFiles(env, name string, log hclog.Logger) []*os.File {
	v, ok := os.LookupEnv(env)
	if !ok {
		return nil
	}
	_ = os.Unsetenv(env)
	var files []*os.File
	for _, f := range strings.Split(v, ",") {
		fd, err := strconv.Atoi(f)
		if err != nil || fd < 3 {
			log.Warn("bad descriptor from the host", env, v)
			files = append(files, nil)
			continue
		}
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files
}

// serveData serves a request the host sends on the data plane; tag is the
// request's Core scope (see requestScope).
func (s *sdk) serveData(ctx context.Context, method string, tag uint64, x *transport.Exchange) error {
	procsRequest()
	if method != "" {
		return noMethod(ctx, method, x)
	}
	return transport.Serve(runner.WithCore(ctx, &remoteCore{s: s, scope: tag, via: x}), x, s.lookup, s.log)
}

// noMethod answers a call the plugin has no method for.
func noMethod(ctx context.Context, method string, x *transport.Exchange) error {
	return transport.ServeCall(ctx, x, func(context.Context, []byte) ([]byte, error) {
		return nil, fmt.Errorf("no method %q in the plugin", method)
	})
}
