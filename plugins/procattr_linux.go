package plugins

import "syscall"

// sysProcAttr kills the plugin when the thread that started it exits (the
// host died, even by SIGKILL) and puts it in its own process group so a
// terminal's Ctrl-C reaches only the host, which stops plugins in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// killGroup kills what is left of the plugin's process group (children the
// plugin started; go-plugin only stops the plugin itself).
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}
