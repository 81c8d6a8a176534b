package runner

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// CoreScope is a view of a Core that can be closed on its own. Closing it
// makes every wait made through it return an error wrapping ErrClosed at
// once, closes the subscriptions opened through it, and makes later
// operations through it fail the same way, while the Core and other scopes
// go on working.
//
// A Runner gives its request handlers a scope, so that at shutdown every
// parked request gets a definite answer even when the Core is shared with the
// host and with plugins. A plugin host can likewise give each plugin
// connection a scope and close it when the plugin goes away.
type CoreScope struct {
	core   Core
	ctx    context.Context // cancelled with cause ErrClosed by Close
	cancel context.CancelCauseFunc
	// waits holds the cancel functions of the waits in progress, which
	// Close ends; next picks each one's shard.
	waits cancelSet
	next  atomic.Uint64
}

// NewCoreScope returns an open scope over core.
func NewCoreScope(core Core) *CoreScope {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &CoreScope{core: core, ctx: ctx, cancel: cancel}
}

// Close closes the scope (not its Core). It is idempotent and returns nil.
func (s *CoreScope) Close() error {
	s.cancel(ErrClosed)
	s.waits.cancelAll(ErrClosed)
	return nil
}

// Core returns the Core the scope is a view of.
func (s *CoreScope) Core() Core { return s.core }

// bind returns a context that ends with ctx or with the scope, and the
// function that releases it.
func (s *CoreScope) bind(ctx context.Context) (context.Context, func(), error) {
	if s.ctx.Err() != nil {
		return nil, nil, ErrClosed
	}
	bound, cancel := context.WithCancelCause(ctx)
	sh := s.waits.add(s.next.Add(1), bound, cancelFunc(cancel))
	if s.ctx.Err() != nil {
		// Close ran before the wait registered: it may have missed it.
		cancel(ErrClosed)
	}
	return bound, func() { sh.remove(bound); cancel(nil) }, nil
}

// result makes err say ErrClosed when the scope's closing ended the call.
func (s *CoreScope) result(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrClosed) || ctx.Err() != nil || s.ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrClosed, err)
}

func (s *CoreScope) closedErr(op string) error {
	return fmt.Errorf("runner: %s: scope %w", op, ErrClosed)
}

// Sleep is Core.Sleep, ended early by the scope's closing.
func (s *CoreScope) Sleep(ctx context.Context, d time.Duration) error {
	bound, release, err := s.bind(ctx)
	if err != nil {
		return s.closedErr("sleep")
	}
	defer release()
	return s.result(ctx, s.core.Sleep(bound, d))
}

// WaitForSignal is Core.WaitForSignal, ended early by the scope's closing.
func (s *CoreScope) WaitForSignal(ctx context.Context, name string, timeout time.Duration) ([]byte, error) {
	bound, release, err := s.bind(ctx)
	if err != nil {
		return nil, s.closedErr(fmt.Sprintf("wait for signal %q", name))
	}
	defer release()
	v, err := s.core.WaitForSignal(bound, name, timeout)
	return v, s.result(ctx, err)
}

// WaitForSignalFunc is SignalFuncWaiter's, ended early by the scope's
// closing: without a goroutine when the scope's Core is a
// SignalFuncWaiter, else with one that waits in WaitForSignal.
func (s *CoreScope) WaitForSignalFunc(ctx context.Context, name string, timeout time.Duration, done func([]byte, error)) {
	if lc, ok := s.core.(*LocalCore); ok {
		s.waitLocal(ctx, lc, name, timeout, done)
		return
	}
	fw, ok := s.core.(SignalFuncWaiter)
	if !ok {
		go func() { done(s.WaitForSignal(ctx, name, timeout)) }()
		return
	}
	bound, release, err := s.bind(ctx)
	if err != nil {
		done(nil, s.closedErr(fmt.Sprintf("wait for signal %q", name)))
		return
	}
	fw.WaitForSignalFunc(bound, name, timeout, func(v []byte, err error) {
		release()
		done(v, s.result(ctx, err))
	})
}

// waitLocal is WaitForSignalFunc over a LocalCore: the wait itself is in
// the scope's set of waits to end at Close, with no context of its own (a
// bound context would cost each parked wait a context, its done channel
// and a context.AfterFunc on it).
func (s *CoreScope) waitLocal(ctx context.Context, lc *LocalCore, name string, timeout time.Duration, done func([]byte, error)) {
	if s.ctx.Err() != nil {
		done(nil, s.closedErr(fmt.Sprintf("wait for signal %q", name)))
		return
	}
	w := &funcWaiter{c: lc, name: name}
	sh := s.waits.add(s.next.Add(1), w, cancelFunc(w.giveUp))
	w.done = func(v []byte, err error) {
		sh.remove(w)
		done(v, s.result(ctx, err))
	}
	if s.ctx.Err() != nil {
		// Close ran before the wait registered: it may have missed it.
		w.giveUp(ErrClosed)
	}
	lc.waitFunc(ctx, w, timeout)
}

// Signal is Core.Signal; it fails once the scope is closed.
func (s *CoreScope) Signal(ctx context.Context, name string, value []byte) (int, error) {
	if s.ctx.Err() != nil {
		return 0, s.closedErr(fmt.Sprintf("signal %q", name))
	}
	return s.core.Signal(ctx, name, value)
}

// SignalAtLeast is Core.SignalAtLeast, ended early by the scope's closing.
func (s *CoreScope) SignalAtLeast(ctx context.Context, name string, value []byte, min int) (int, error) {
	bound, release, err := s.bind(ctx)
	if err != nil {
		return 0, s.closedErr(fmt.Sprintf("signal %q", name))
	}
	defer release()
	n, err := s.core.SignalAtLeast(bound, name, value, min)
	return n, s.result(ctx, err)
}

// Publish is Core.Publish; it fails once the scope is closed.
func (s *CoreScope) Publish(ctx context.Context, topic string, msg []byte) (uint64, error) {
	if s.ctx.Err() != nil {
		return 0, s.closedErr(fmt.Sprintf("publish to %q", topic))
	}
	return s.core.Publish(ctx, topic, msg)
}

// Subscribe is Core.Subscribe; the subscription also closes with the scope.
func (s *CoreScope) Subscribe(ctx context.Context, topic string, from Position) (Subscription, error) {
	bound, release, err := s.bind(ctx)
	if err != nil {
		return nil, s.closedErr(fmt.Sprintf("subscribe to %q", topic))
	}
	sub, err := s.core.Subscribe(bound, topic, from)
	if err != nil {
		release()
		return nil, s.result(ctx, err)
	}
	// The underlying subscription closes when bound ends; release the
	// scope's hold then too.
	context.AfterFunc(bound, release)
	return &scopedSub{Subscription: sub, scope: s, release: release}, nil
}

type scopedSub struct {
	Subscription
	scope   *CoreScope
	release func()
}

func (s *scopedSub) Fetch(ctx context.Context) ([]Message, error) {
	msgs, err := s.Subscription.Fetch(ctx)
	return msgs, s.scope.result(ctx, err)
}

func (s *scopedSub) Close() error {
	err := s.Subscription.Close()
	s.release()
	return err
}
