//go:build race

package rawio

import "syscall"

// sysRead reads fd into p with syscall.Read, which tells the race
// detector about it (see the package doc).
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return max(n, 0), errnoOf(err)
}

// sysWrite writes p to fd with syscall.Write, which tells the race
// detector about it (see the package doc).
func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return max(n, 0), errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
