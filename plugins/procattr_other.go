//go:build !linux

package plugins

import "syscall"

// sysProcAttr: without Pdeathsig, the SDK's parent watch stops orphans.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// killGroup does nothing without process groups set up at start.
func killGroup(int) {}
