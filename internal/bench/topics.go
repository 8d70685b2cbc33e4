package bench

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// topicsResult is what subscribing many topics cost.
type topicsResult struct {
	elapsed time.Duration
	// heap and stack are bytes per topic: the growth of the live heap
	// (after a GC) and of the goroutine stacks in use.
	heap, stack float64
}

func (t topicsResult) values() []float64 {
	return []float64{t.elapsed.Seconds(), t.heap, t.stack}
}

// subscribeTopics subscribes n topics named after topic, from workers
// goroutines at a time where the system subscribes one topic per call, and
// measures the time until all are live and the memory they hold while idle.
// Everything the measurement needs of its own (names, slots for the
// channels) is allocated before the first reading of the heap.
func (r *runner) subscribeTopics(ctx context.Context, t transport, topic string, n, workers int, eventTarget bool) (topicsResult, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.SubscribeTimeout)
	defer cancel()
	topics := make([]string, n)
	for i := range topics {
		topics[i] = topic + ":" + strconv.Itoa(i) // "type:id", as the EventTarget wants
	}
	set, err := t.prepareTopics(topics, workers, eventTarget)
	if err != nil {
		return topicsResult{}, err
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	err = set.subscribeAll(ctx)
	res := topicsResult{elapsed: time.Since(start)}
	if err == nil {
		runtime.GC()
		runtime.ReadMemStats(&after)
		res.heap = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
		res.stack = float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n)
	}
	return res, errors.Join(err, set.close())
}

// forEach calls fn(i) for every i in [0, n) from workers goroutines at a
// time and returns the first error; after an error or the end of ctx no
// further call starts.
func forEach(ctx context.Context, n, workers int, fn func(i int) error) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	stop := make(chan struct{})
	fail := func(err error) {
		errOnce.Do(func() {
			first = err
			close(stop)
		})
	}
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				select {
				case <-stop:
					return
				case <-ctx.Done():
					fail(ctx.Err())
					return
				default:
				}
				if err := fn(i); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// watermillTopics subscribes one topic per Subscribe call; every
// subscription lives until close.
type watermillTopics struct {
	sub     message.Subscriber
	names   []string
	workers int
	chans   []<-chan *message.Message
	ctx     context.Context // of every subscription
	cancel  context.CancelFunc
}

func newWatermillTopics(sub message.Subscriber, names []string, workers int) *watermillTopics {
	ctx, cancel := context.WithCancel(context.Background())
	return &watermillTopics{
		sub: sub, names: names, workers: workers,
		chans: make([]<-chan *message.Message, len(names)),
		ctx:   ctx, cancel: cancel,
	}
}

func (t *watermillTopics) subscribeAll(ctx context.Context) error {
	// ctx bounds the subscribing; t.ctx is the subscriptions' lifetime.
	stop := context.AfterFunc(ctx, t.cancel)
	defer stop()
	return forEach(ctx, len(t.names), t.workers, func(i int) error {
		ch, err := t.sub.Subscribe(t.ctx, t.names[i])
		t.chans[i] = ch
		return err
	})
}

// close cancels every subscription and waits until its channel is closed.
func (t *watermillTopics) close() error {
	t.cancel()
	for _, ch := range t.chans {
		if ch != nil {
			for range ch { // until closed
			}
		}
	}
	return nil
}

// targetTopics adds one listener per topic to an EventTarget.
type targetTopics struct {
	target    *redispubsub.EventTarget[struct{}]
	names     []string
	workers   int
	listeners []*redispubsub.Listener
}

func newTargetTopics(pub message.Publisher, sub message.Subscriber, names []string, workers int) (*targetTopics, error) {
	target, err := redispubsub.NewEventTarget[struct{}](pub, sub)
	if err != nil {
		return nil, err
	}
	return &targetTopics{target: target, names: names, workers: workers, listeners: make([]*redispubsub.Listener, len(names))}, nil
}

func ignoreEvent(context.Context, redispubsub.Event[struct{}]) {}

func (t *targetTopics) subscribeAll(ctx context.Context) error {
	return forEach(ctx, len(t.names), t.workers, func(i int) error {
		l, err := t.target.AddEventListener(ctx, t.names[i], ignoreEvent)
		t.listeners[i] = l
		return err
	})
}

// close removes every listener and waits until the EventTarget's
// subscriptions ended.
func (t *targetTopics) close() error { return t.target.Close() }
