package plugins

// Starting one process of a plugin binary: verify and execute the pinned
// file, hand-shake, describe, connect the host service.

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"google.golang.org/grpc"
)

// launch starts a process, connects the host service, describes it and
// (after the first start) recreates every instance. On the first start it
// also builds the dist.
func (p *proc) launch(first bool) (*incarnation, error) {
	p.mu.Lock()
	pin, user := p.sum, p.user
	p.mu.Unlock()
	exe, sum, err := openBinary(p.path, pin, p.allowWritable)
	if err != nil {
		return nil, err
	}
	// The child has its own descriptor once the process started.
	defer exe.Close()
	p.mu.Lock()
	p.ran = sum
	p.mu.Unlock()
	cmd := binaryCommand(exe, p.path)
	cmd.Env = append(append(cmd.Env, pluginEnviron()...), wire.EnvLogLevel+"="+levelName(p.log))
	cmd.SysProcAttr = sysProcAttr()
	if user != nil {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		if err := user.Apply(cmd.SysProcAttr); err != nil {
			return nil, fmt.Errorf("plugin binary %s: starting it as %s: %w", p.path, user.Name, err)
		}
	}
	lend, err := p.h.newLender(cmd, p.log)
	if err != nil {
		return nil, fmt.Errorf("plugin binary %s: %w", p.path, err)
	}
	dp, err := newDataPlane(cmd)
	if err != nil {
		lend.close()
		return nil, fmt.Errorf("plugin binary %s: %w", p.path, err)
	}
	tail := &stderrTail{}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		VersionedPlugins: map[int]plugin.PluginSet{wire.ProtocolVersion: {wire.PluginName: &goPlugin{}}},
		Cmd:              cmd,
		SkipHostEnv:      true, // cmd.Env has it, less hostOnlyEnv
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           execPathName{fixedName{p.log}, cmd.Path, p.path},
		StartTimeout:     p.h.opts.StartTimeout,
		Stderr:           io.MultiWriter(tail, p.relay.writer("stderr", hclog.Warn, true)),
		SyncStdout:       p.relay.writer("stdout", hclog.Info, false),
		SyncStderr:       p.relay.writer("stderr", hclog.Warn, false),
	})
	type result struct {
		pc  *pluginConn
		err error
	}
	res := make(chan result, 1)
	g := &incarnation{client: client, exited: make(chan struct{})}
	release := holdProcs(p.log)
	go func() {
		defer close(g.exited)
		defer release()
		defer lend.close()
		defer dp.close()
		// Pdeathsig fires when the thread that forked the child exits
		// (golang/go#27505), so fork from a locked thread that lives as long
		// as the process; the thread is discarded when this goroutine ends.
		runtime.LockOSThread()
		rpc, err := client.Client()
		var pc *pluginConn
		if err == nil {
			var raw any
			raw, err = rpc.Dispense(wire.PluginName)
			if err == nil {
				pc = raw.(*pluginConn)
			}
		}
		if err != nil {
			g.kill()
			res <- result{err: err}
			return
		}
		res <- result{pc: pc}
		<-pc.done.Done()
		// The process is gone (killed, or crashed): release the client's
		// side, the host service's broker listener and server included,
		// which nothing else closes after a crash. Through kill, so that
		// the Kill that stopped the process is the one that closes it.
		g.kill()
	}()
	r := <-res
	lend.started()
	dp.started()
	if r.err != nil {
		<-g.exited
		// client.Kill has waited for go-plugin's cmd.Wait.
		return nil, p.startError(r.err, exitDesc(cmd.ProcessState), tail.String())
	}
	tail.stop()
	g.pc = r.pc
	g.http = transport.GRPC{Conn: r.pc.conn, Method: wire.MethodHTTP}

	fail := func(what string, err error) (*incarnation, error) {
		g.kill()
		<-g.exited
		return nil, fmt.Errorf("plugin binary %s: %s: %w", p.path, what, rpcError(err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.h.opts.StartTimeout)
	defer cancel()
	var m wire.Manifest
	if err := wire.Invoke(ctx, r.pc.conn, wire.MethodDescribe, struct{}{}, &m); err != nil {
		return fail("describe", err)
	}
	g.pid = m.PID
	cs := newCoreService(p.h, r.pc.done)
	switch {
	case m.DataPlane && dp != nil:
		mux := dp.mux(p.dataHandler(cs), p.log)
		if p.h.dataStall > 0 {
			mux.SetStall(p.h.dataStall)
		}
		g.http = mux
		pid := g.pid // what the plugin says; the process's own when known
		if cmd.Process != nil {
			pid = cmd.Process.Pid
		}
		go p.restartWhenBroken(g, pid, mux)
	case dp != nil:
		dp.closeArenas()
	}
	id := r.pc.broker.NextId()
	go r.pc.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		return p.hostServer(cs, opts)
	})
	if err := wire.Invoke(ctx, r.pc.conn, wire.MethodInit, wire.InitRequest{Broker: id}, nil); err != nil {
		return fail("init", err)
	}
	if first {
		p.mu.Lock() // info (Host.Plugins) reads the manifest meanwhile
		p.manifest = m
		p.name = m.Name
		p.mu.Unlock()
		p.log.Debug("plugin started", "path", p.path, "pid", m.PID, "version", m.Version)
		return g, nil
	}
	if m.Name != p.manifest.Name {
		return fail("restart", fmt.Errorf("now serves dist %s instead of %s", m.Name, p.manifest.Name))
	}
	// Recreate the instances. The incarnation is current (not yet serving)
	// so that composites recreating their apps reach it.
	p.mu.Lock()
	if p.state == StateClosed {
		p.mu.Unlock()
		g.kill()
		<-g.exited
		return nil, ErrUnavailable
	}
	p.cur = g
	specs := append([]*wire.CreateRequest(nil), p.specs...)
	p.mu.Unlock()
	if what, err := recreate(ctx, r.pc.conn, specs); err != nil {
		return fail(what, err)
	}
	p.log.Info("plugin restarted", "pid", m.PID, "instances", len(specs))
	return g, nil
}

// startError classifies a go-plugin start failure.
// exited says how the process ended by itself ("" if it did not), stderr
// the end of what it wrote to stderr (see stderrTail.String).
func (p *proc) startError(err error, exited, stderr string) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "timeout while waiting"):
		return fmt.Errorf("%w: plugin binary %s did not complete the plugin handshake within %s%s", ErrStartTimeout, p.path, p.h.opts.StartTimeout, stderr)
	case strings.Contains(strings.ToLower(msg), "incompatible api version"), strings.Contains(msg, "incompatible core API"):
		return fmt.Errorf("%w: plugin binary %s: want paster plugin protocol %d: %s", ErrProtocol, p.path, wire.ProtocolVersion, firstLine(msg))
	case strings.Contains(msg, "exited before we could connect"), strings.HasSuffix(firstLine(msg), "plugin message: "):
		// It ended without a word of the handshake: how it ended and what
		// it said on stderr tell why; go-plugin's message does not.
		if exited == "" {
			exited = "closed its standard output"
		}
		return fmt.Errorf("%w: plugin binary %s %s before the plugin handshake (want an executable that calls plugins.Serve, paster plugin protocol %d)%s",
			ErrNotPlugin, p.path, exited, wire.ProtocolVersion, stderr)
	case strings.Contains(msg, "Unrecognized remote plugin message"),
		strings.Contains(msg, "exec format error"), strings.Contains(msg, "permission denied"), strings.Contains(msg, "no such file"),
		strings.Contains(msg, "unsupported plugin protocol"), strings.Contains(msg, "Dispense"), strings.Contains(msg, "unknown plugin type"):
		if exited != "" {
			stderr = "; it " + exited + stderr
		}
		return fmt.Errorf("%w: plugin binary %s: want an executable that calls plugins.Serve (paster plugin protocol %d): %s%s", ErrNotPlugin, p.path, wire.ProtocolVersion, firstLine(msg), stderr)
	}
	return fmt.Errorf("plugin binary %s: %w%s", p.path, err, stderr)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// restartWhenBroken kills g's process (pid, and its process group) when
// it breaks the data-plane protocol (a frame beyond its window, large
// messages nobody reads past the budget, a socket it stopped reading: see
// package transport's "A hostile plugin"), so that it restarts as after a
// crash: the connection the violation closed is gone, its requests got
// 502, and the plugin is not to be trusted with the others. SIGKILL
// first: go-plugin's graceful Kill waits for the plugin to answer, which
// a hung one never does.
func (p *proc) restartWhenBroken(g *incarnation, pid int, mux *transport.Mux) {
	select {
	case <-mux.Broken():
		p.log.Error("plugin broke the data-plane protocol; killing it to restart it", "path", p.path, "pid", pid)
		killGroup(pid)
		g.kill()
	case <-g.exited:
	}
}
