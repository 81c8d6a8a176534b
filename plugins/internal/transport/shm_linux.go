//go:build linux

package transport

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// NewArena makes the shared memory of one data-plane connection: a memory
// file of ArenaSize bytes (memfd), to pass to the plugin with the
// connection's socket and to NewMux on both sides. Its pages are taken as
// slots are first used.
func NewArena() (*os.File, error) {
	fd, err := unix.MemfdCreate("paster-arena", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "paster-arena")
	if err := f.Truncate(ArenaSize); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// mapArena maps f, a memory file NewArena made, shared and writable.
func mapArena(f *os.File) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != ArenaSize {
		return nil, fmt.Errorf("arena of %d bytes, want %d", st.Size(), ArenaSize)
	}
	return unix.Mmap(int(f.Fd()), 0, ArenaSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func unmapArena(mem []byte) { _ = unix.Munmap(mem) }
