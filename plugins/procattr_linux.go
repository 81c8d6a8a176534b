package plugins

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/paster-dev/paster/plugins/internal/wire"
)

// sysProcAttr sends the plugin SIGTERM when the thread that started it
// exits (the host died, even by SIGKILL) and puts it in its own process
// group so a terminal's Ctrl-C reaches only the host, which stops plugins in
// order. SIGTERM, not SIGKILL: the SDK catches it to kill the processes the
// plugin started before it exits (see Serve); a plugin that cannot catch it
// dies of it all the same.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
}

// killGroup kills what is left of the plugin's process group (children the
// plugin started; go-plugin only stops the plugin itself).
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// exeFD is the descriptor number the plugin inherits its binary as: the
// first after stdin, stdout and stderr (exec.Cmd.ExtraFiles[0]).
const exeFD = 3

// binaryCommand returns the command that runs the binary open as exe (the
// file whose checksum was checked), named path in its argv[0].
//
// Executing the open descriptor rather than the path is what makes a pin
// hold: a rename over the path after the hash does not change the inode the
// descriptor refers to. The descriptor is inherited as fd 3 (ExtraFiles
// clears close-on-exec in the child only) and executed as /proc/self/fd/3,
// resolved in the child after its descriptors are set up. Unlike execveat
// with AT_EMPTY_PATH on a close-on-exec descriptor, this also runs scripts
// (the interpreter opens /proc/self/fd/3 again). Copying the binary to a
// private directory was the alternative; it costs a copy per start and
// meets ETXTBSY when another goroutine forks while the copy is open for
// writing (golang/go#22315). The plugin inherits fd 3 and the SDK closes it
// (wire.EnvExeFD).
func binaryCommand(exe *os.File, path string) *exec.Cmd {
	cmd := exec.Command("/proc/self/fd/" + strconv.Itoa(exeFD))
	cmd.Args[0] = path
	cmd.ExtraFiles = []*os.File{exe}
	cmd.Env = []string{wire.EnvExeFD + "=" + strconv.Itoa(exeFD)}
	return cmd
}
