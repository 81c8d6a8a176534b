//go:build !linux

package transport

import (
	"errors"
	"os"
)

var errNoArena = errors.New("shared-memory arenas are made on Linux only")

// NewArena fails: outside Linux, bodies always go inline.
func NewArena() (*os.File, error) { return nil, errNoArena }

func mapArena(*os.File) ([]byte, error) { return nil, errNoArena }

func unmapArena([]byte) {}
