package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// part is one component of pushctl standalone: how to run it, and how to
// tell it accepts work (nil: as soon as it runs).
type part struct {
	name  string
	run   func(context.Context) error
	ready func(context.Context) error
}

// parts runs the components of standalone, each started after the ones
// before it are ready; the first to fail stops the others.
type parts struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	first   error
	pending []string
	all     atomic.Bool
}

func newParts(ctx context.Context, cancel context.CancelFunc) *parts {
	return &parts{ctx: ctx, cancel: cancel}
}

// start runs p and waits until it is ready, it fails, or startTimeout
// passes.
func (ps *parts) start(p part) error {
	exited := make(chan struct{})
	ps.mu.Lock()
	ps.pending = append(ps.pending, p.name)
	ps.mu.Unlock()
	ps.wg.Go(func() {
		defer close(exited)
		err := p.run(ps.ctx)
		if err != nil && ps.ctx.Err() == nil {
			ps.mu.Lock()
			if ps.first == nil {
				ps.first = fmt.Errorf("%s: %w", p.name, err)
			}
			ps.mu.Unlock()
		}
		ps.cancel()
	})
	if p.ready == nil {
		ps.isReady(p.name)
		return nil
	}
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		cctx, cancel := context.WithTimeout(ps.ctx, 2*time.Second)
		last = p.ready(cctx)
		cancel()
		if last == nil {
			ps.isReady(p.name)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s stopped while starting", p.name)
		case <-ps.ctx.Done():
			return fmt.Errorf("%s: start interrupted", p.name)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", p.name, startTimeout, last)
		}
	}
}

// isReady takes a part off the list of those still starting.
func (ps *parts) isReady(name string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.pending = slices.DeleteFunc(ps.pending, func(n string) bool { return n == name })
}

// allReady records that every part has started and is ready.
func (ps *parts) allReady() { ps.all.Store(true) }

// ready is the readiness check of the whole: nil once every part is ready.
func (ps *parts) ready(context.Context) error {
	if ps.all.Load() {
		return nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return fmt.Errorf("standalone still starting (not ready yet: %s)", strings.Join(ps.pending, ", "))
}

// wait waits until every part has stopped and returns the first failure.
func (ps *parts) wait() error {
	ps.wg.Wait()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.first
}

// httpReady checks that url answers 200.
func httpReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(url + " answered " + resp.Status)
		}
		return nil
	}
}
