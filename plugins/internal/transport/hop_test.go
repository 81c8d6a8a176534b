package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/internal/rawio"
)

// hopChildEnv names what the test binary, started again as a child
// process by BenchmarkProcessHop, serves on the socket it inherits as
// file descriptor 3: "socket" echoes bytes, "mux" serves a Mux (hello
// over HTTP exchanges, calls echoed).
const hopChildEnv = "PASTER_HOP_CHILD"

// BenchmarkProcessHop measures what one round trip to another process
// costs on this machine, against which the plugin hop's cost reads: a
// one-byte ping-pong on a unix socket pair, read and written as the Mux
// does (package rawio: through net.Conn each system call would also wake the
// runtime's sysmon, which the Mux avoids) (socket), then one
// small HTTP exchange through Forward, the Mux and Serve (http) and one
// Core-sized call (call), each with the peer in a child process, one
// round trip at a time (every message finds the other side asleep, as a
// plugin's responses find a lightly loaded host). It reports the CPU time
// both processes used per round trip (cpu-us/op: the sum of their
// threads' run time from /proc, so it counts wake-ups and context
// switches, which ns/op alone hides) and each side's share.
func BenchmarkProcessHop(b *testing.B) {
	b.Run("socket", func(b *testing.B) {
		c, child := hopChild(b, "socket")
		rw := rawio.New(c) // the Mux's own reads and writes
		r, w := rw, rw
		p := make([]byte, 1)
		hopLoop(b, child, func() error {
			if _, err := w.Write(p); err != nil {
				return err
			}
			_, err := io.ReadFull(r, p)
			return err
		})
	})
	b.Run("http", func(b *testing.B) {
		c, child := hopChild(b, "mux")
		m := NewMux([]net.Conn{c}, true, refuseAll, hclog.NewNullLogger())
		b.Cleanup(func() { m.Close() })
		r := httptest.NewRequest("GET", "/", nil)
		hopLoop(b, child, func() error {
			w := httptest.NewRecorder()
			if err := Forward(w, r, m, 1); err != nil || w.Code != 200 {
				return fmt.Errorf("forward: %d %v", w.Code, err)
			}
			return nil
		})
	})
	b.Run("call", func(b *testing.B) {
		c, child := hopChild(b, "mux")
		m := NewMux([]net.Conn{c}, true, refuseAll, hclog.NewNullLogger())
		b.Cleanup(func() { m.Close() })
		in := []byte(strings.Repeat("c", 64))
		hopLoop(b, child, func() error {
			_, err := m.Call(context.Background(), "echo", in)
			return err
		})
	})
}

func refuseAll(context.Context, string, uint64, *Exchange) error {
	return errors.New("nothing served here")
}

// hopLoop runs one round trip b.N times and reports the CPU each process
// used per round trip.
func hopLoop(b *testing.B, child int, trip func() error) {
	for range 100 { // both processes warm: stacks grown, buffers pooled
		if err := trip(); err != nil {
			b.Fatal(err)
		}
	}
	self, peer := runTime(b, os.Getpid()), runTime(b, child)
	b.ResetTimer()
	for range b.N {
		if err := trip(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	self, peer = runTime(b, os.Getpid())-self, runTime(b, child)-peer
	n := float64(b.N)
	b.ReportMetric(float64((self+peer).Microseconds())/n, "cpu-us/op")
	b.ReportMetric(float64(self.Microseconds())/n, "self-cpu-us/op")
	b.ReportMetric(float64(peer.Microseconds())/n, "peer-cpu-us/op")
}

// runTime is the time all of process pid's threads have run on a CPU
// (the first field of each /proc/PID/task/TID/schedstat, in ns: finer
// than the clock ticks of /proc/PID/stat).
func runTime(b *testing.B, pid int) time.Duration {
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(files) == 0 {
		b.Skipf("no /proc/%d/task/*/schedstat here", pid)
	}
	var sum time.Duration
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended: its time is lost either way
		}
		ns, err := strconv.ParseInt(strings.Fields(string(data))[0], 10, 64)
		if err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		sum += time.Duration(ns)
	}
	return sum
}

// hopChild starts the test binary again as a child serving kind on one
// end of a unix socket pair, and returns the other end and the child's
// pid. The child ends when its end of the pair closes.
func hopChild(b *testing.B, kind string) (net.Conn, int) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "hop child")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHopChild$")
	cmd.Env = append(os.Environ(), hopChildEnv+"="+kind)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		b.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "hop parent")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		_ = cmd.Wait()
	})
	return c, cmd.Process.Pid
}

// TestHopChild is BenchmarkProcessHop's child process; run any other way
// it does nothing.
func TestHopChild(t *testing.T) {
	kind := os.Getenv(hopChildEnv)
	if kind == "" {
		t.Skip("only BenchmarkProcessHop's child process runs this")
	}
	f := os.NewFile(3, "hop child")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	switch kind {
	case "socket":
		rw := rawio.New(c)
		_, _ = io.Copy(rw, rw)
	case "mux":
		h := http.HandlerFunc(hello)
		m := NewMux([]net.Conn{c}, false, func(ctx context.Context, method string, _ uint64, x *Exchange) error {
			if method == "echo" {
				return ServeCall(ctx, x, func(_ context.Context, in []byte) ([]byte, error) { return in, nil })
			}
			return Serve(ctx, x, func(uint64) http.Handler { return h }, hclog.NewNullLogger())
		}, hclog.NewNullLogger())
		<-m.Done()
	default:
		t.Fatalf("%s=%q: want socket or mux", hopChildEnv, kind)
	}
}
