package redispubsub

import "sync"

// hookRunner calls the user's hooks (OnReconnect, OnGap) one at a time, in
// order, on a goroutine of its own, so that a slow hook never stops a
// connection's reading, and a hook may call Subscribe or Close.
type hookRunner struct {
	mu      sync.Mutex
	queue   []func()
	running bool // a goroutine drains the queue
	closed  bool
	idle    *sync.Cond // signalled when the goroutine returns
	inHook  bool
}

func newHookRunner() *hookRunner {
	h := &hookRunner{}
	h.idle = sync.NewCond(&h.mu)
	return h
}

// call queues hook; it is dropped once the runner is closed.
func (h *hookRunner) call(hook func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.queue = append(h.queue, hook)
	if !h.running {
		h.running = true
		go h.drain()
	}
}

// drain runs the queued hooks; it returns once the queue is empty, so that
// an idle Subscriber has no hook goroutine.
func (h *hookRunner) drain() {
	h.mu.Lock()
	for len(h.queue) > 0 {
		hook := h.queue[0]
		h.queue = h.queue[1:]
		h.inHook = true
		h.mu.Unlock()
		hook()
		h.mu.Lock()
		h.inHook = false
	}
	h.running = false
	h.idle.Broadcast()
	h.mu.Unlock()
}

// close runs the hooks queued so far and waits for them, unless a hook is
// running (Close called from a hook must not wait for itself): then the
// goroutine ends when that hook returns, and nothing queued after it runs.
func (h *hookRunner) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.inHook {
		h.queue = nil
		return
	}
	for h.running {
		h.idle.Wait()
	}
}
