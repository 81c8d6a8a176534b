// Package testsync holds what paster's tests use to wait for another
// goroutine or process without sleeping for a guessed time: WaitFor polls a
// condition, Recv takes a value from a channel, each failing the test
// after a generous deadline (a hang is a failure, not a wait), and Buffer
// collects what a logger or a process writes while the test reads it.
// FreePort names a loopback port before a server binds it; DiscardWriter
// is a ResponseWriter for benchmarks of handlers.
//
// It imports nothing of paster, so any package's internal tests can use
// it (runner's own tests cannot import runner/coretest, which imports
// runner).
package testsync

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// Deadline is how long WaitFor and Recv wait before failing the test. It
// bounds a hang; no test passes or fails by how fast something happens.
const Deadline = 60 * time.Second

// WaitFor polls cond until it holds, failing the test with what after
// Deadline. Polls start 100 µs apart and back off to 10 ms, so a quick
// state is seen at once and a slow one costs little CPU.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	pause := 100 * time.Microsecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Deadline, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// Recv returns what ch delivers, failing the test with what if nothing
// comes within Deadline.
func Recv[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(Deadline)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %s waiting for %s", Deadline, what)
		panic("unreachable")
	}
}

// Buffer is a bytes.Buffer that one goroutine (a logger, a process's
// output copier) may write while another reads it. The zero Buffer is
// empty and ready.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
