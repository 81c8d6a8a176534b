package pastercmd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A PID file names the process that serves, and that process holds an
// exclusive lock (flock) on it for as long as it runs. The kernel drops the
// lock when the process ends, however it ends (SIGKILL, a crash), so a
// file nobody holds is stale even when its PID is alive again: the system
// may have given that PID to another program, which status must not call
// a server and stop must not signal. The lock also keeps two servers from
// claiming one file.

// pidFile is a PID file this process wrote and holds locked.
type pidFile struct {
	path string
	f    *os.File // open, locked, for the life of the process
}

// writePIDFile opens or creates path, takes its lock and writes this
// process's id into it. It fails, naming the PID in the file, when a live
// process holds the lock (another paster serves with this PID file), when
// path is a symbolic link (openPIDFile), and when the file cannot be
// opened or written.
func writePIDFile(path string) (*pidFile, error) {
	f, err := openPIDFile(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	// A status or stop checking the file holds a shared lock for an
	// instant (pidFileHeld): try again for a while before giving up.
	for range 50 {
		if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := readPIDFile(path)
			return nil, fmt.Errorf("%s is held by the running paster with PID %d", path, pid)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := io.WriteString(f, strconv.Itoa(os.Getpid())+"\n"); err != nil {
		f.Close()
		return nil, err
	}
	return &pidFile{path: path, f: f}, nil
}

// openPIDFile opens path for writing with flag (creating it, mode 0644),
// refusing a symbolic link (openNoFollow).
func openPIDFile(path string, flag int) (*os.File, error) {
	return openNoFollow(path, flag, "a pid file through one")
}

// openNoFollow opens path for writing with flag (creating it, mode 0644),
// refusing a symbolic link: paster often runs as root until it has bound,
// and a link planted where others may write would make it write into any
// file. The error then says path is a symbolic link and that paster does
// not write what (e.g. "a pid file through one").
func openNoFollow(path string, flag int, what string) (*os.File, error) {
	f, err := os.OpenFile(path, flag|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link; paster does not write %s", path, what)
	}
	return f, err
}

// remove removes the PID file if it still holds this process's id, so a
// newer server's file is never deleted, and then releases the lock. A file
// that cannot be removed is logged: after --user, the file's directory must
// be writable by that user (left behind, the file is unlocked, so stale).
func (p *pidFile) remove(logger hclog.Logger) {
	defer p.f.Close()
	if pid, err := readPIDFile(p.path); err == nil && pid == os.Getpid() {
		if err := os.Remove(p.path); err != nil {
			logger.Warn("pid file not removed; put it in a directory the user paster runs as may write (--user), or remove it yourself", "file", p.path, "error", err)
		}
	}
}

// readPIDFile returns the process id stored in path.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("not a valid PID file in %s", path)
	}
	return pid, nil
}

// pidFileHeld reports whether a live process holds path's lock, that is
// whether the paster that wrote it still runs. A file that cannot be
// opened is not held.
func pidFileHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}
