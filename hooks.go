package redispubsub

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
)

// hookRunner calls the user's hooks (OnReconnect, OnGap) one at a time, in
// order, on a goroutine of its own, so that a slow hook never stops a
// connection's reading, and a hook may call Subscribe or Close.
//
// Close waits for every hook queued before it (each counted gap reaches
// OnGap), unless it is called from a hook, which must not wait for itself:
// the runner's goroutine is known by its id, so that Close can tell.
type hookRunner struct {
	mu      sync.Mutex
	queue   []func()
	running bool   // a goroutine drains the queue
	runner  uint64 // that goroutine's id, once it started
	closed  bool
	// done is closed once the runner is closed and no hook runs.
	done chan struct{}
}

func newHookRunner() *hookRunner {
	return &hookRunner{done: make(chan struct{})}
}

// call queues hook; it is dropped once the runner is closed (by then the
// Subscriber's connections are gone, and nothing calls it).
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
	id := goroutineID()
	h.mu.Lock()
	h.runner = id
	for len(h.queue) > 0 {
		hook := h.queue[0]
		h.queue[0] = nil
		h.queue = h.queue[1:]
		h.mu.Unlock()
		hook()
		h.mu.Lock()
	}
	h.queue = nil
	h.running, h.runner = false, 0
	if h.closed {
		close(h.done)
	}
	h.mu.Unlock()
}

// inHook reports whether the caller is a hook: whether it runs on the
// runner's goroutine.
func (h *hookRunner) inHook() bool {
	h.mu.Lock()
	runner := h.runner
	h.mu.Unlock()
	return runner != 0 && runner == goroutineID()
}

// close stops taking hooks. The hooks queued so far still run; the returned
// channel is closed once the last of them returned.
func (h *hookRunner) close() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		if !h.running {
			close(h.done)
		}
	}
	return h.done
}

// goroutineID returns the id of the calling goroutine, which the first line
// of its stack trace names ("goroutine 42 [running]:"). The runtime offers
// no other way; only the hook runner and Close ask, once each.
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
