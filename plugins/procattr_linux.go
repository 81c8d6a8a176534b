package plugins

import "syscall"

// sysProcAttr kills the plugin when the thread that started it exits (the
// host died, even by SIGKILL) and puts it in its own process group so a
// terminal's Ctrl-C reaches only the host, which stops plugins in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
