package plugins

import (
	"bytes"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// The SDK side of "nothing a plugin starts outlives the host".
//
// A plugin process makes itself a child subreaper (PR_SET_CHILD_SUBREAPER):
// a process it started, directly or not, whose parent exits is reparented
// to the plugin instead of to init, even after setsid or a double fork. So
// every process the plugin started and that still runs is a descendant of
// the plugin in /proc, and when the plugin stops (the host closed it, the
// host died: Pdeathsig SIGTERM or the parent watch) it kills them all with
// SIGKILL before it exits. The host kills the plugin's process group as
// well; that covers plugins that could not become subreapers.
//
// What still escapes: a process that a descendant asked another, unrelated
// process to start (systemd-run, at, a container runtime, ssh), and the
// descendants of a plugin that is itself killed by SIGKILL (the OOM killer,
// kill -9 on the plugin) that left its process group — those are
// reparented to the next subreaper or init. A deliberate double fork with
// setsid does not escape.
//
// Being a subreaper also means reaping: an orphan reparented to the plugin
// would stay a zombie when it exits, as nobody waits for it. The SDK waits
// for such zombies when SIGCHLD arrives, but only for those it holds no
// pidfd for: Go's os/exec keeps a pidfd for each process it started until
// Wait, so the plugin's own cmd.Wait calls keep their exit statuses. (A
// child started with syscall.ForkExec directly has no pidfd and may be
// reaped first; on a kernel without pidfds no zombie is reaped before exit.)

// becomeSubreaper makes this process the subreaper of its descendants and
// starts reaping orphans; it reports whether that worked.
func becomeSubreaper(log hclog.Logger) bool {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		log.Warn("cannot become a child subreaper: processes this plugin starts outside its process group may outlive the host", "error", err)
		return false
	}
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		log.Debug("no pidfds: orphaned children are reaped only when the plugin exits", "error", err)
		return true
	}
	unix.Close(fd)
	ch := make(chan os.Signal, 1) // coalesces: one pass reaps every zombie
	signal.Notify(ch, syscall.SIGCHLD)
	go func() {
		for range ch {
			reapOrphans()
		}
	}()
	return true
}

// procStat is what /proc/PID/stat says of a process.
type procStat struct {
	ppid  int
	state byte
	start string // start time in clock ticks since boot: tells a reused PID
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses: the fields go on after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{ppid: ppid, state: f[0][0], start: f[19]}, true
}

// processes returns every process of /proc.
func processes() map[int]procStat {
	ents, _ := os.ReadDir("/proc")
	out := make(map[int]procStat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out[pid] = st
		}
	}
	return out
}

// descendants returns the PIDs below root in procs.
func descendants(procs map[int]procStat, root int) []int {
	children := map[int][]int{}
	for pid, st := range procs {
		children[st.ppid] = append(children[st.ppid], pid)
	}
	var out []int
	next := []int{root}
	for len(next) > 0 {
		pid := next[len(next)-1]
		next = next[:len(next)-1]
		for _, c := range children[pid] {
			out = append(out, c)
			next = append(next, c)
		}
	}
	return out
}

// reapOrphans waits for the zombie children this process holds no pidfd
// for: orphans reparented to it, which nobody else will wait for.
func reapOrphans() {
	self := os.Getpid()
	var own map[int]bool
	for pid, st := range processes() {
		if st.ppid != self || st.state != 'Z' {
			continue
		}
		if own == nil {
			own = pidfdTargets()
		}
		if own[pid] {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// pidfdTargets returns the PIDs of the processes this process holds a
// pidfd for (os/exec holds one per started process until Wait).
func pidfdTargets() map[int]bool {
	out := map[int]bool{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || link != "anon_inode:[pidfd]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					out[pid] = true
				}
			}
		}
	}
	return out
}

// killDescendants kills every process below this one with SIGKILL, again
// until none is left (a killed process's children are reparented here) or
// within has passed.
func killDescendants(log hclog.Logger, within time.Duration) {
	self := os.Getpid()
	deadline := time.Now().Add(within)
	for {
		procs := processes()
		live := 0
		for _, pid := range descendants(procs, self) {
			if st := procs[pid]; st.state != 'Z' && st.state != 'X' {
				live++
				killExactly(pid, st.start)
			}
		}
		if live == 0 {
			return
		}
		if time.Now().After(deadline) {
			log.Error("processes started by the plugin survive it", "count", live)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// killExactly sends SIGKILL to pid if it still is the process that started
// at start: through a pidfd, so that a PID reused meanwhile is not hit.
func killExactly(pid int, start string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if err == unix.ENOSYS {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		return
	}
	defer unix.Close(fd)
	if st, ok := readStat(pid); ok && st.start == start {
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}
