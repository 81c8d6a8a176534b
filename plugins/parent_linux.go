package plugins

import (
	"os"

	"golang.org/x/sys/unix"
)

// exitOf returns a channel closed once the process pid has exited, watched
// through a pidfd (Linux 5.3 and later): the pidfd becomes readable when
// the process exits, and the runtime's poller waits for that as for a
// socket, so an idle plugin is not woken at all until then. It returns nil
// where pidfds are not to be had (an older kernel, a seccomp filter), and
// the caller polls instead.
func exitOf(pid int) <-chan struct{} {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer f.Close()
		// Read calls the function, and while it returns false waits for
		// the descriptor to be readable and calls it again: readable (and
		// only then) is what poll(2) says of a pidfd whose process exited.
		_ = rc.Read(func(fd uintptr) bool {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(p, 0)
			return err != nil || (n > 0 && p[0].Revents != 0)
		})
	}()
	return done
}
