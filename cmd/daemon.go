package pastercmd

// PasteScript's daemon vocabulary (spec/pastedeploy.md §4.1-4.2):
// paster serve CONFIG start|stop|restart|status, --daemon, --pid-file,
// --log-file, --monitor-restart, with PasteScript's messages and exit codes.
//
// Go cannot fork, so --daemon re-executes paster with the same arguments and
// the environment marker PASTER_DAEMON_CHILD, in a new session (setsid), with
// stdin on /dev/null and stdout and stderr appended to the log file. The
// child does not daemonize again. It writes the pid file itself, and tells
// the parent on an inherited pipe once it serves, so "start" exits 0 only
// when the server really started (1 otherwise, pointing at the log file).
//
// --monitor-restart makes the process a monitor that runs the server as a
// child (marker PASTER_MONITOR_CHILD) and starts it again whenever it exits.
// Unlike PasteScript, the pid file holds the monitor's pid, so "stop"
// stops the monitor, which stops its child, instead of a server the monitor
// would restart at once. If the monitor dies, even by SIGKILL, its server
// sees it is orphaned and stops. "restart" stops the daemon in the
// foreground; its background child (same arguments) only starts.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	defaultPIDFile = "paster.pid"
	defaultLogFile = "paster.log"
	// startTimeout bounds how long "start" waits for the server to serve.
	startTimeout = 2 * time.Minute
)

func (o *serveOptions) pidFileOrDefault() string {
	if o.pidFile != "" {
		return o.pidFile
	}
	return defaultPIDFile
}

// alive reports whether process pid exists (signal 0 can reach it).
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// livePID returns the pid in file when that process is alive and holds
// the file (a paster serving with it: see pidFile), else 0.
func livePID(file string) int {
	pid, err := readPIDFile(file)
	if err != nil || !alive(pid) || !pidFileHeld(file) {
		return 0
	}
	return pid
}

// daemonStatus is "paster serve CONFIG status": exit 0 when the pid file
// names a running process, 1 otherwise, with PasteScript's messages.
func daemonStatus(file string, stdout io.Writer) int {
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stdout, "No PID file %s\n", file)
		return 1
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		fmt.Fprintf(stdout, "No PID in file %s\n", file)
		return 1
	}
	if !alive(pid) {
		fmt.Fprintf(stdout, "PID %d in %s is not running\n", pid, file)
		return 1
	}
	if !pidFileHeld(file) {
		fmt.Fprintf(stdout, "PID %d in %s is not a running paster (no process holds the file: it is stale, and the PID another program's)\n", pid, file)
		return 1
	}
	fmt.Fprintf(stdout, "Server running in PID %d\n", pid)
	return 0
}

// stopDaemon is "stop" (and the first half of "restart"): SIGINT once a
// second up to 10 times, then SIGTERM up to 10 times, until the process in
// the pid file is gone; then the pid file is removed. Exit 1 for a missing,
// unreadable or stale pid file (a stale one is deleted), 3 when the process
// would not die. On failure it prints "Could not stop daemon" (restart:
// "...; aborting").
func stopDaemon(file, cmd string, stdout io.Writer) (code int) {
	defer func() {
		if code == 0 {
			return
		}
		if cmd == "restart" {
			fmt.Fprintln(stdout, "Could not stop daemon; aborting")
		} else {
			fmt.Fprintln(stdout, "Could not stop daemon")
		}
	}()
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintf(stdout, "No PID file exists in %s\n", file)
		return 1
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		fmt.Fprintf(stdout, "Not a valid PID file in %s\n", file)
		return 1
	}
	if !alive(pid) || !pidFileHeld(file) {
		// A live PID in a file no process holds belongs to another
		// program now: it is not signalled.
		fmt.Fprintf(stdout, "PID in %s is not valid (deleting)\n", file)
		os.Remove(file)
		return 1
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		for range 10 {
			if err := syscall.Kill(pid, sig); err != nil && errors.Is(err, syscall.ESRCH) {
				break
			}
			if waitGone(pid, time.Second) {
				if p, err := readPIDFile(file); err == nil && p == pid {
					os.Remove(file)
				}
				return 0
			}
		}
	}
	fmt.Fprintf(stdout, "failed to kill web process %d\n", pid)
	return 3
}

// waitGone polls until pid is gone or d passes; it reports whether it went.
func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childArgs returns this process's arguments for a child paster.
func childArgs() []string { return os.Args[1:] }

// daemonize starts paster again in the background and returns the exit
// status for the foreground: 0 once the background server serves. It
// refuses when the pid file names a live process, and fails early when the
// log or pid file cannot be written.
func daemonize(opts *serveOptions, stdout, stderr io.Writer) int {
	if pid := livePID(opts.pidFile); pid != 0 {
		fmt.Fprintf(stderr, "Daemon is already running (PID: %d from PID file %s)\n", pid, opts.pidFile)
		return 1
	}
	logf, err := openLogFile(opts.log.file)
	if err != nil {
		fmt.Fprintf(stderr, "Error: Unable to write to log file: %v\n", err)
		return 1
	}
	defer logf.Close()
	if f, err := openPIDFile(opts.pidFile, os.O_APPEND|os.O_WRONLY); err != nil {
		fmt.Fprintf(stderr, "Error: Unable to write to pid file: %v\n", err)
		return 1
	} else {
		f.Close()
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer devnull.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	cmd := exec.Command(exe, childArgs()...)
	cmd.Env = append(os.Environ(), envDaemonChild+"=1", envReadyFD+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.ExtraFiles = []*os.File{wr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		wr.Close()
		rd.Close()
		fmt.Fprintf(stderr, "paster serve: starting the daemon: %v\n", err)
		return 1
	}
	wr.Close()
	pid := cmd.Process.Pid
	cmd.Process.Release()

	got := make(chan string, 1)
	go func() {
		// One line, not until EOF: processes the server starts could
		// hold the pipe open.
		line, _ := bufio.NewReader(rd).ReadString('\n')
		got <- line
	}()
	select {
	case msg := <-got:
		rd.Close()
		if strings.HasPrefix(msg, "ok") {
			fmt.Fprintf(stdout, "Starting server in PID %d.\n", pid)
			return 0
		}
		fmt.Fprintf(stderr, "paster serve: the server did not start; see %s\n", opts.log.file)
		return 1
	case <-time.After(startTimeout):
		rd.Close()
		fmt.Fprintf(stderr, "paster serve: the server (PID %d) did not start serving within %s; see %s\n", pid, startTimeout, opts.log.file)
		return 1
	}
}

// keepReadyFD marks the ready pipe inherited from "start" close-on-exec, so
// that plugin processes do not inherit it. Call it before starting anything.
func keepReadyFD() {
	if n, err := strconv.Atoi(os.Getenv(envReadyFD)); err == nil && n > 2 {
		syscall.CloseOnExec(n)
	}
}

// signalReady tells the foreground "start" that the server serves, when
// this process is a daemon child (or the first server of its monitor).
func signalReady() {
	fd := os.Getenv(envReadyFD)
	if fd == "" {
		return
	}
	os.Unsetenv(envReadyFD)
	n, err := strconv.Atoi(fd)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(n), "ready")
	if f == nil {
		return
	}
	f.WriteString("ok\n")
	f.Close()
}

// monitorRestart runs the server as a child process and starts it again
// whenever it exits, until SIGINT or SIGTERM, which it passes on to the
// child (SIGTERM) before exiting with the child's status. The pid file, if
// any, holds the monitor's pid.
func monitorRestart(opts *serveOptions, stdout, stderr io.Writer) int {
	if opts.pidFile != "" {
		pf, err := writePIDFile(opts.pidFile)
		if err != nil {
			fmt.Fprintf(stderr, "Error: Unable to write to pid file: %v\n", err)
			return 1
		}
		defer pf.remove(hclog.NewNullLogger()) // the monitor keeps its user
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var ready *os.File
	if fd, err := strconv.Atoi(os.Getenv(envReadyFD)); err == nil {
		ready = os.NewFile(uintptr(fd), "ready")
		os.Unsetenv(envReadyFD)
	}
	fmt.Fprintln(stderr, "Starting subprocess with monitor parent")
	for {
		cmd := exec.Command(exe, childArgs()...)
		cmd.Env = append(os.Environ(), envMonitorChild+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if ready != nil {
			cmd.Env = append(cmd.Env, envReadyFD+"=3")
			cmd.ExtraFiles = []*os.File{ready}
		}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(stderr, "paster serve: starting the server: %v\n", err)
			return 1
		}
		if ready != nil {
			ready.Close()
			ready = nil
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-sigs:
			fmt.Fprintln(stderr, "signal caught in monitor process; stopping the server")
			cmd.Process.Signal(syscall.SIGTERM)
			err := <-exited
			return exitCode(err)
		case err := <-exited:
			fmt.Fprintf(stderr, "server exited (%v)\n", exitDesc(err))
		}
		select {
		case <-sigs:
			return 1
		case <-time.After(time.Second):
		}
		fmt.Fprintln(stderr, "-------------------- Restarting --------------------")
	}
}

// untilParentGone returns an actor of serve's group that ends when this
// process's parent is gone (it was reparented): a server started by
// --monitor-restart whose monitor dies, even by SIGKILL, stops gracefully
// instead of running on as an orphan that no pid file names. Polling
// getppid is portable, and unlike Pdeathsig it does not depend on which
// thread started the child.
func untilParentGone(logger hclog.Logger) (execute func() error, interrupt func(error)) {
	ppid := os.Getppid()
	stop := make(chan struct{})
	return func() error {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return nil
			case <-t.C:
			}
			if os.Getppid() != ppid {
				logger.Error("the monitor process is gone; stopping", "monitor_pid", ppid)
				return nil
			}
		}
	}, func(error) { close(stop) }
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if c := ee.ExitCode(); c >= 0 {
			return c
		}
		return 1
	}
	if err != nil {
		return 1
	}
	return 0
}

func exitDesc(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
