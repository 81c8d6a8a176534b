package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// # Listening addresses
//
// A server's address (HTTPConfig.Addr, and what a ListenerSource is asked
// for) has one of three forms:
//
//	host:port      a TCP socket
//	unix:PATH      a unix domain socket at PATH (absolute; "@name" is
//	               Linux's abstract namespace, which has no file)
//	systemd:NAME   a socket systemd passed at start (socket activation),
//	               by its name (FileDescriptorName= of the .socket unit,
//	               LISTEN_FDNAMES); "systemd:" alone is the only one passed
//
// Sockets systemd passed are adopted by a ListenerPool (Adopt) and also
// serve a section whose host:port or unix:PATH is their address, so an
// existing configuration runs unchanged under socket activation.

// Prefixes of the address forms.
const (
	UnixPrefix    = "unix:"
	SystemdPrefix = "systemd:"
)

// DefaultSocketMode is the permission of a unix socket's file unless
// socket_mode says otherwise: its owner and group may connect (connecting
// takes write permission), nobody else.
const DefaultSocketMode fs.FileMode = 0o660

// ErrSocketInUse is wrapped by the error of binding a unix socket whose file
// another process still listens on.
var ErrSocketInUse = errors.New("another process listens on the socket")

// ListenOptions are the settings of a socket beyond its address.
type ListenOptions struct {
	// SocketMode is the permission of a unix socket's file, which it has
	// from the moment it appears at its path (bindUnix); 0 is
	// DefaultSocketMode.
	SocketMode fs.FileMode
}

func (o ListenOptions) mode() fs.FileMode {
	if o.SocketMode == 0 {
		return DefaultSocketMode
	}
	return o.SocketMode
}

// listen binds addr (a host:port or unix:PATH address, see above). A unix
// socket's stale file is removed first (removeStale) and the new file
// appears at PATH with opt's mode, never a wider one (bindUnix); the
// listener removes the file when it is closed. A systemd:
// address cannot be bound: only a ListenerPool that adopted the socket has
// it. Every error names the address.
func listen(addr string, opt ListenOptions) (net.Listener, error) {
	if strings.HasPrefix(addr, SystemdPrefix) {
		return nil, fmt.Errorf("http: listen on %s: systemd passed no such socket (socket activation: LISTEN_FDS, named by FileDescriptorName= in the .socket unit)", addr)
	}
	path, ok := strings.CutPrefix(addr, UnixPrefix)
	if !ok {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("http: listen on %s: %w", addr, err)
		}
		return ln, nil
	}
	if abstract(path) {
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("http: listen on %s: %w", addr, err)
		}
		return ln, nil
	}
	if err := removeStale(path); err != nil {
		return nil, fmt.Errorf("http: listen on %s: %w", addr, err)
	}
	ln, err := bindUnix(path, opt.mode())
	if err != nil {
		return nil, fmt.Errorf("http: listen on %s: %w", addr, err)
	}
	return ln, nil
}

// bindUnix binds a unix socket whose file appears at path with mode, and
// never with a wider one. A bind creates the file with the mode the umask
// gives (0777 with umask 0: anyone on the machine may connect, and a
// connection accepted then stays), so binding at path and then chmod-ing
// it left a window. Instead the socket is bound in a new directory next to
// path that only this user may enter (0700; next to path so that the file
// stays on its filesystem), given mode there, and then linked at path with
// link(2): atomic, and, unlike rename(2), it fails (EEXIST) rather than
// replace a file put at path since removeStale looked. The directory is
// removed whatever happens. Changing the umask instead would change it for
// the whole process, racing with every other file it creates.
//
// The listener's Addr is path, and Close removes path, as a listener bound
// there directly does.
func bindUnix(path string, mode fs.FileMode) (net.Listener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".paster-bind")
	if err != nil {
		return nil, fmt.Errorf("creating the private directory to bind the socket in: %w", err)
	}
	defer os.RemoveAll(dir)
	private := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: private, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("binding the socket at %s first, to link it at %s once its mode is set (that name is %d bytes longer): %w",
			private, path, len(private)-len(path), err)
	}
	ln.SetUnlinkOnClose(false)
	if err := chmodSocket(private, mode); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Link(private, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("placing the socket at %s: %w", path, err)
	}
	return &unixListener{UnixListener: ln, path: path}, nil
}

// unixListener is a unix socket bindUnix bound under another name and
// linked at path: its Addr is path and Close removes path.
type unixListener struct {
	*net.UnixListener
	path   string
	unlink sync.Once
}

func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// Close removes the socket's file, once, and closes the socket.
func (l *unixListener) Close() error {
	l.unlink.Do(func() { os.Remove(l.path) })
	return l.UnixListener.Close()
}

// chmodSocket sets the mode of a unix socket's file (none for an abstract
// one): bindUnix's before the file is placed at its path, and a pooled
// socket's when a later server asks for another mode.
func chmodSocket(path string, mode fs.FileMode) error {
	if abstract(path) {
		return nil
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("socket_mode %04o: %w", mode, err)
	}
	return nil
}

func abstract(path string) bool { return strings.HasPrefix(path, "@") }

// removeStale removes the file of a unix socket left behind by a process
// that did not remove it (killed, or a crash), so that the bind succeeds. It
// refuses, leaving the file alone, when the file is not a socket or when
// something still accepts connections on it (ErrSocketInUse): taking the
// path from a running server would silently cut it off.
func removeStale(path string) error {
	if abstract(path) {
		return nil
	}
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (mode %s); not removing it", path, st.Mode())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w %s: is another paster serving there? Stop it, or choose another path", ErrSocketInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// EACCES, for one: whether it is stale cannot be told.
		return fmt.Errorf("%s exists and cannot be probed (%w); not removing it", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	return nil
}

// SocketPath returns the file of a unix: address, or "" for another form or
// an abstract socket.
func SocketPath(addr string) string {
	path, ok := strings.CutPrefix(addr, UnixPrefix)
	if !ok || abstract(path) {
		return ""
	}
	return path
}

// socketAddr reads the unix: and systemd: forms of a section's host key and
// its socket_mode (octal, at most 0777; DefaultSocketMode unless set). It
// returns addr "" for a TCP host (which tcpAddr reads). A relative unix
// path is taken from the directory of the file host is written in. A port
// key beside a unix: or systemd: host is ignored with a warning, and so is
// socket_mode beside a host that is not unix:. Errors name the file, line,
// section and key.
func socketAddr(host string, local entrypoints.Local, logger hclog.Logger) (addr string, mode fs.FileMode, err error) {
	mode = DefaultSocketMode
	if v, set := local.Lookup("socket_mode"); set {
		n, perr := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
		if perr != nil || n > 0o777 {
			return "", 0, local.Errorf("socket_mode", "%q is not a file mode: want octal digits such as 0660 (owner and group may connect) or 0666 (anyone may)", v)
		}
		mode = fs.FileMode(n)
	}
	path, isUnix := strings.CutPrefix(host, UnixPrefix)
	_, isSystemd := strings.CutPrefix(host, SystemdPrefix)
	if _, set := local.Lookup("socket_mode"); set && !isUnix {
		logger.Warn("socket_mode ignored: host is not a unix socket (unix:PATH)", "host", host, "at", local.Where("socket_mode").String())
	}
	switch {
	case isUnix:
		path = strings.TrimSpace(path)
		if path == "" {
			return "", 0, local.Errorf("host", "%q names no socket file: want unix:/path/to/paster.sock", host)
		}
		if !abstract(path) && !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(local.Where("host").File), path)
			if abs, err := filepath.Abs(path); err == nil {
				path = abs
			}
		}
		addr = UnixPrefix + path
	case isSystemd:
		addr, mode = host, 0
	default:
		return "", 0, nil
	}
	if v, set := local.Lookup("port"); set {
		logger.Warn("host is not a TCP address; port ignored", "host", host, "port", v, "at", local.Where("port").String())
	}
	return addr, mode, nil
}
