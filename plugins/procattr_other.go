//go:build !linux

package plugins

import "syscall"

// sysProcAttr: without Pdeathsig, the SDK's parent watch stops orphans.
func sysProcAttr() *syscall.SysProcAttr { return nil }
