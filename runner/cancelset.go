package runner

import (
	"context"
	"sync"
)

// cancelSet holds the cancelers of contexts (or of waits without
// one) that must end together (a Mount's requests at Cut, a CoreScope's
// waits at Close) without a
// context.AfterFunc each on one shared context: that registered every one
// in a single map under a single lock, and each cost an afterFuncCtx and
// its removal besides. The set is sharded so that goroutines on different
// CPUs rarely share a lock; the caller picks the shard (a counter it keeps
// anyway), and removes what it added from that shard.
type cancelSet struct {
	shards [cancelShards]cancelShard
}

// cancelShards is the number of shards of a cancelSet.
const cancelShards = 16

type cancelShard struct {
	mu      sync.Mutex
	cancels map[any]canceler // by key (a context, a wait), made on first add
	_       [64 - 16]byte    // a cache line each (a Mutex and a map pointer are 16 bytes)
}

// canceler ends what a cancelSet holds it for, with a cause.
type canceler interface{ cancel(cause error) }

// cancelFunc is a cancel function as a canceler (a func value is one
// pointer: converting it to the interface allocates nothing).
type cancelFunc context.CancelCauseFunc

func (f cancelFunc) cancel(cause error) { f(cause) }

// add registers cancel, which ends what key names (a context, a wait), in
// shard n (modulo the number of shards) and returns that shard, for
// remove.
func (s *cancelSet) add(n uint64, key any, cancel canceler) *cancelShard {
	sh := s.shard(n)
	sh.mu.Lock()
	if sh.cancels == nil {
		sh.cancels = map[any]canceler{}
	}
	sh.cancels[key] = cancel
	sh.mu.Unlock()
	return sh
}

// shard returns shard n (modulo the number of shards), where add(n, ...)
// registers.
func (s *cancelSet) shard(n uint64) *cancelShard { return &s.shards[n%cancelShards] }

// remove forgets key; removing it again, or what was never added, does
// nothing.
func (sh *cancelShard) remove(key any) {
	sh.mu.Lock()
	delete(sh.cancels, key)
	sh.mu.Unlock()
}

// cancelAll cancels every registered context (or wait) with cause. A
// context added while it runs may be missed: who adds checks afterwards
// whether the set was cancelled meanwhile (the Mount's cut context, the
// scope's context) and cancels its own. The cancel functions run with no
// lock held: one may remove itself (a wait's done does).
func (s *cancelSet) cancelAll(cause error) {
	var cancels []canceler
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, cancel := range sh.cancels {
			cancels = append(cancels, cancel)
		}
		sh.mu.Unlock()
	}
	for _, c := range cancels {
		c.cancel(cause)
	}
}
