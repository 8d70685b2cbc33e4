package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// minSize is the smallest payload size: {"d":""} is 8 bytes.
const minSize = 8

// A throughput measurement keeps the publishers at most this many messages,
// and this many bytes of payload, ahead of the consumer, so that it measures
// what a system sustains, not how much a buffer absorbs, and never comes
// near Redis's default pubsub output buffer limit (32 MiB). Losses under a
// burst are the tests' business.
const (
	maxInFlight      = 1000
	maxInFlightBytes = 16 << 20
)

// errStalled ends a measurement in which nothing moved for StallTimeout.
var errStalled = errors.New("no progress within the stall timeout")

// payload returns a JSON object of exactly size bytes.
func payload(size int) []byte {
	return []byte(`{"d":"` + strings.Repeat("x", size-minSize) + `"}`)
}

type throughputResult struct {
	rate   float64 // messages per second
	allocs float64 // heap allocations of the process per message
	sent   uint64  // messages published, the warm-up's too
}

// throughput publishes payloads of size bytes on topics for Duration from
// publishers goroutines, batch messages per call (goroutine i on topic i
// modulo their number), and, with consume, waits until a consumer received
// every one. The rate counts from the first Publish to the last message
// received (without consume: until the last Publish returned and the
// transport's flush says the server has every message). A warm-up batch on
// every topic goes first and is not counted.
func (r *runner) throughput(ctx context.Context, t transport, topics []string, size, publishers, batch int, consume bool) (throughputResult, error) {
	return r.throughputWithin(ctx, t, topics, size, publishers, batch, consume, windowSize(size, publishers, batch))
}

// throughputWithin is throughput with the publishers at most window
// messages (a whole number of batches) ahead of the consumer.
func (r *runner) throughputWithin(ctx context.Context, t transport, topics []string, size, publishers, batch int, consume bool, window int) (throughputResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	body := payload(size)
	win := newWindow(window)
	if consume {
		stop, err := t.consume(ctx, topics, func() { win.release(1) })
		if err != nil {
			return throughputResult{}, fmt.Errorf("subscribe: %w", err)
		}
		defer stop()
	}
	round := func(topic string) error {
		if consume {
			if err := win.acquire(ctx, batch); err != nil {
				return err
			}
		}
		return t.publish(ctx, topic, body, batch)
	}
	var published atomic.Uint64
	moved := published.Load
	if consume {
		moved = win.received
	}
	defer watch(ctx, cancel, r.cfg.StallTimeout, moved)()

	var warm uint64 // messages of the warm-up
	for _, topic := range topics {
		if err := round(topic); err != nil {
			return throughputResult{}, r.failure("warm-up", err, t, warm, win)
		}
		warm += uint64(batch)
		if consume {
			if err := win.drain(ctx); err != nil {
				return throughputResult{}, r.failure("warm-up", err, t, warm, win)
			}
		}
	}
	received := win.received()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	deadline := start.Add(r.cfg.Duration)
	var wg sync.WaitGroup
	for i := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := topics[i%len(topics)]
			for time.Now().Before(deadline) {
				if err := round(topic); err != nil {
					cancel(err)
					return
				}
				published.Add(uint64(batch))
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return throughputResult{}, r.failure("publish", err, t, published.Load(), win)
	}
	if consume {
		if err := win.drain(ctx); err != nil {
			return throughputResult{}, r.failure("receive", err, t, published.Load(), win)
		}
	} else if err := t.flush(); err != nil {
		return throughputResult{}, r.failure("flush", err, t, published.Load(), win)
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	n := published.Load()
	if got := win.received() - received; consume && got != n {
		return throughputResult{}, fmt.Errorf("received %d messages, published %d", got, n)
	}
	return throughputResult{
		rate:   float64(n) / elapsed.Seconds(),
		allocs: float64(after.Mallocs-before.Mallocs) / float64(n),
		sent:   warm + n,
	}, nil
}

// failure describes a failed throughput measurement with what was moved
// and what the system counted.
func (r *runner) failure(phase string, err error, t transport, published uint64, win *window) error {
	msg := fmt.Sprintf("%s: %v (published %d, received %d)", phase, err, published, win.received())
	if d := t.diagnose(); d != "" {
		msg += "; " + d
	}
	return errors.New(msg)
}

// windowSize is the number of messages the publishers may be ahead of the
// consumer: maxInFlight, or fewer for large payloads, but at least one call
// of every publisher, and a whole number of batches.
func windowSize(size, publishers, batch int) int {
	n := max(min(maxInFlight, maxInFlightBytes/size), batch, publishers)
	return n / batch * batch
}

// watch cancels ctx with errStalled when moved has not changed for stall,
// until the returned function is called.
func watch(ctx context.Context, cancel context.CancelCauseFunc, stall time.Duration, moved func() uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(max(stall/10, time.Millisecond))
		defer tick.Stop()
		last, since := moved(), time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if m := moved(); m != last {
					last, since = m, now
				} else if now.Sub(since) >= stall {
					cancel(errStalled)
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// window is a flow-control window: a publisher takes credits before it
// publishes, the consumer gives one back per message received. A waiting
// publisher is woken only once enough credits are back, so that waiting
// costs no CPU the systems measured could use.
type window struct {
	size int
	got  atomic.Uint64 // messages received

	mu   sync.Mutex
	free int
	want int           // credits the waiting acquirers need
	wake chan struct{} // capacity 1
}

func newWindow(size int) *window {
	return &window{size: size, free: size, wake: make(chan struct{}, 1)}
}

func (w *window) received() uint64 { return w.got.Load() }

// release gives back n credits for n messages received.
func (w *window) release(n int) {
	w.got.Add(uint64(n))
	w.mu.Lock()
	w.free += n
	enough := w.want > 0 && w.free >= w.want
	w.mu.Unlock()
	if enough {
		w.signal()
	}
}

func (w *window) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// acquire takes n credits, waiting until they are free or ctx ends.
func (w *window) acquire(ctx context.Context, n int) error {
	for {
		w.mu.Lock()
		if w.free >= n {
			w.free -= n
			more := w.want > 0 && w.free >= w.want
			w.mu.Unlock()
			if more {
				w.signal() // another acquirer may go on too
			}
			return nil
		}
		w.want = n
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// drain waits until every message published was received, and gives the
// credits back.
func (w *window) drain(ctx context.Context) error {
	if err := w.acquire(ctx, w.size); err != nil {
		return err
	}
	w.mu.Lock()
	w.free += w.size
	w.want = 0
	w.mu.Unlock()
	return nil
}
