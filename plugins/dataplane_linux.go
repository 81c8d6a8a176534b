//go:build linux

package plugins

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// dataPlane is the host's side of a starting plugin's data-plane sockets.
type dataPlane struct {
	conns []net.Conn
	child []*os.File // the plugin's ends, closed here once it started

	mu     sync.Mutex // closeArenas runs as the plugin starts and as it exits
	arenas []*os.File // the connections' shared memory, until mapped
}

// newDataPlane makes the socket pairs and adds the plugin's ends to cmd.
func newDataPlane(cmd *exec.Cmd) (*dataPlane, error) {
	dp := &dataPlane{}
	var fds []string
	for range dataConns {
		c, child, err := socketPair(syscall.SOCK_STREAM, "paster data plane")
		if err != nil {
			dp.close()
			return nil, fmt.Errorf("data-plane socket pair: %w", err)
		}
		dp.conns = append(dp.conns, c)
		dp.child = append(dp.child, child)
		cmd.ExtraFiles = append(cmd.ExtraFiles, child)
		// ExtraFiles[i] is descriptor 3+i in the child.
		fds = append(fds, strconv.Itoa(2+len(cmd.ExtraFiles)))
	}
	cmd.Env = append(cmd.Env, wire.EnvDataFDs+"="+strings.Join(fds, ","))
	// Shared memory for bodies: without it (no memfd) they go inline.
	for range dataConns {
		f, err := transport.NewArena()
		if err != nil {
			dp.closeArenas()
			return dp, nil
		}
		dp.arenas = append(dp.arenas, f)
	}
	var arenaFDs []string
	for _, f := range dp.arenas {
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
		arenaFDs = append(arenaFDs, strconv.Itoa(2+len(cmd.ExtraFiles)))
	}
	cmd.Env = append(cmd.Env, wire.EnvDataArenaFDs+"="+strings.Join(arenaFDs, ","))
	return dp, nil
}

// closeArenas closes the host's shared-memory files (a Mux maps them
// before).
func (dp *dataPlane) closeArenas() {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	for _, f := range dp.arenas {
		f.Close()
	}
	dp.arenas = nil
}

// mux runs the data plane's Mux over the connections and their shared
// memory, which it maps; the host's files of it are closed then.
func (dp *dataPlane) mux(h transport.Handler, log hclog.Logger) *transport.Mux {
	dp.mu.Lock()
	m := transport.NewMux(dp.conns, true, h, log, dp.arenas...)
	dp.mu.Unlock()
	dp.closeArenas()
	return m
}

// started closes the host's copies of the plugin's ends.
func (dp *dataPlane) started() {
	for _, f := range dp.child {
		f.Close()
	}
}

// close closes every socket (a Mux over them closes them too).
func (dp *dataPlane) close() {
	dp.started()
	dp.closeArenas()
	for _, c := range dp.conns {
		c.Close()
	}
}

// socketPair makes a unix socket pair of type typ: the host's end as a
// net.Conn, the plugin's as a file to pass it (both close on exec).
func socketPair(typ int, name string) (net.Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	parent := os.NewFile(uintptr(fds[0]), name)
	child := os.NewFile(uintptr(fds[1]), name+" (plugin)")
	c, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		child.Close()
		return nil, nil, err
	}
	return c, child, nil
}
