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
// slots are first used. Its size is sealed: a plugin cannot shrink it
// under the host's mapping (which would fault on the missing pages).
func NewArena() (*os.File, error) {
	fd, err := unix.MemfdCreate("paster-arena", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "paster-arena")
	if err := f.Truncate(ArenaSize); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealing the arena: %w", err)
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
