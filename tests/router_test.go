package tests

// Watermill routers on the adapter, with Watermill's own middleware.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// wmNewRouter returns a router that wmRunRouter runs.
func wmNewRouter(t testing.TB) *message.Router { return testutil.NewRouter(t) }

// wmRunRouter runs r until the end of the test; see testutil.RunRouter.
func wmRunRouter(t testing.TB, r *message.Router) { testutil.RunRouter(t, r) }

// wmJSON returns a message with a JSON payload (the default marshaler's
// requirement).
func wmJSON(format string, args ...any) *message.Message {
	return message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, format, args...))
}

// A handler that fails twice, under Retry, handles the message successfully
// once: one delivery, one Ack, no Nack, no redelivery.
func TestRouter_RetryHandlesOnceAfterTwoFailures(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	r := wmNewRouter(t)
	r.AddMiddleware(middleware.Retry{MaxRetries: 3, InitialInterval: time.Millisecond, Logger: testutil.Logger(t)}.Middleware)

	var attempts, successes atomic.Int32
	handled := make(chan string, 10)
	r.AddConsumerHandler("retrying", "orders", sub, func(msg *message.Message) error {
		if attempts.Add(1) <= 2 {
			return errors.New("transient failure")
		}
		successes.Add(1)
		handled <- msg.UUID
		return nil
	})
	wmRunRouter(t, r)

	msg := wmJSON(`{"order":1}`)
	require.NoError(t, pub.Publish("orders", msg))
	require.Equal(t, msg.UUID, testutil.Wait(t, handled, "the handler to succeed"))
	testutil.Eventually(t, func() bool { return sub.Stats().Acked == 1 })

	stats := sub.Stats()
	assert.EqualValues(t, 3, attempts.Load())
	assert.EqualValues(t, 1, successes.Load())
	assert.EqualValues(t, 1, stats.Delivered, "retried in the handler, not redelivered")
	assert.Zero(t, stats.Nacked)
}

// A message whose handler fails goes to the poison topic with the reason,
// the topic and the handler in its metadata, and is Acked on its own topic.
// On Redis Pub/Sub the poison topic reaches only live subscribers: the test
// subscribes to it before the message is poisoned.
func TestRouter_PoisonQueue(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	poisonObserver := wmSubscriber(t, srv, nil)
	poisoned, _ := testutil.Subscribe(t, poisonObserver, "poison")

	poisonQueue, err := middleware.PoisonQueue(pub, "poison")
	require.NoError(t, err)
	r := wmNewRouter(t)
	r.AddMiddleware(poisonQueue)
	r.AddConsumerHandler("charge-payment", "payments", sub, func(*message.Message) error {
		return errors.New("card declined")
	})
	wmRunRouter(t, r)

	msg := wmJSON(`{"amount":42}`)
	msg.Metadata.Set("tenant", "acme")
	require.NoError(t, pub.Publish("payments", msg))

	got := testutil.Receive(t, poisoned)
	got.Ack()
	assert.Equal(t, msg.UUID, got.UUID)
	assert.JSONEq(t, `{"amount":42}`, string(got.Payload))
	assert.Equal(t, "acme", got.Metadata.Get("tenant"), "original metadata kept")
	assert.Contains(t, got.Metadata.Get(middleware.ReasonForPoisonedKey), "card declined")
	assert.Equal(t, "payments", got.Metadata.Get(middleware.PoisonedTopicKey))
	assert.Equal(t, "charge-payment", got.Metadata.Get(middleware.PoisonedHandlerKey))
	assert.NotEmpty(t, got.Metadata.Get(middleware.PoisonedSubscriberKey))

	testutil.Eventually(t, func() bool { return sub.Stats().Acked == 1 }, "the poisoned message is Acked on its topic")
	assert.Zero(t, sub.Stats().Nacked)
}

// A handler that panics, under Recoverer, makes the router Nack the message,
// which is redelivered (same UUID and payload) and then handled.
func TestRouter_RecovererRedeliversPanickedMessage(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) { c.NackResendSleep = time.Millisecond })

	var recovered atomic.Value
	recordError := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			msgs, err := h(msg)
			if err != nil {
				recovered.Store(err)
			}
			return msgs, err
		}
	}
	r := wmNewRouter(t)
	r.AddMiddleware(recordError, middleware.Recoverer) // Recoverer innermost

	var calls atomic.Int32
	handled := make(chan *message.Message, 10)
	r.AddConsumerHandler("fragile", "jobs", sub, func(msg *message.Message) error {
		if calls.Add(1) == 1 {
			panic("first attempt explodes")
		}
		handled <- msg
		return nil
	})
	wmRunRouter(t, r)

	msg := wmJSON(`{"job":7}`)
	require.NoError(t, pub.Publish("jobs", msg))
	again := testutil.Wait(t, handled, "the redelivered message")
	assert.Equal(t, msg.UUID, again.UUID)
	assert.JSONEq(t, `{"job":7}`, string(again.Payload))
	testutil.Eventually(t, func() bool { return sub.Stats().Acked == 1 })

	var panicErr middleware.RecoveredPanicError
	require.ErrorAs(t, recovered.Load().(error), &panicErr)
	assert.Equal(t, "first attempt explodes", panicErr.V)
	assert.EqualValues(t, 2, calls.Load())
	assert.EqualValues(t, 1, sub.Stats().Nacked)
	assert.EqualValues(t, 2, sub.Stats().Delivered)
}

// Throttle bounds the handling rate: with one message per 20ms, 10 queued
// messages are handled over at least 8 intervals (the first may take a tick
// that was waiting).
func TestRouter_Throttle(t *testing.T) {
	const n, interval = 10, 20 * time.Millisecond
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	r := wmNewRouter(t)
	r.AddMiddleware(middleware.NewThrottle(1, interval).Middleware)

	var mu sync.Mutex
	var times []time.Time
	done := make(chan struct{})
	r.AddConsumerHandler("throttled", "events", sub, func(*message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == n {
			close(done)
		}
		return nil
	})
	wmRunRouter(t, r)

	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = wmJSON(`{"i":%d}`, i)
	}
	require.NoError(t, pub.Publish("events", msgs...))
	testutil.Wait(t, done, "every message handled")

	mu.Lock()
	defer mu.Unlock()
	elapsed := times[n-1].Sub(times[0])
	assert.GreaterOrEqual(t, elapsed, (n-2)*interval, "handled faster than the throttle allows")
}

// Timeout gives the handler a message context that ends after the timeout;
// a handler that waits on it sees context.DeadlineExceeded.
func TestRouter_Timeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	r := wmNewRouter(t)
	r.AddMiddleware(middleware.Timeout(timeout))

	type result struct {
		err     error
		elapsed time.Duration
	}
	results := make(chan result, 1)
	r.AddConsumerHandler("slow", "reports", sub, func(msg *message.Message) error {
		start := time.Now()
		select {
		case <-msg.Context().Done():
		case <-time.After(testutil.Timeout):
		}
		results <- result{err: msg.Context().Err(), elapsed: time.Since(start)}
		return nil
	})
	wmRunRouter(t, r)

	require.NoError(t, pub.Publish("reports", wmJSON(`{}`)))
	res := testutil.Wait(t, results, "the handler")
	assert.ErrorIs(t, res.err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, res.elapsed, timeout/2) // the deadline starts before the handler runs
	assert.Less(t, res.elapsed, testutil.Timeout)
	testutil.Eventually(t, func() bool { return sub.Stats().Acked == 1 })
}

// A handler publishes what it produces to another topic, with the
// correlation ID of the message it handled (CorrelationID middleware).
func TestRouter_HandlerPublishesToAnotherTopic(t *testing.T) {
	const n = 3
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	// The router closes a handler's Publisher when the handler stops: give
	// it its own.
	handlerPub, _ := wmPubSub(t, srv, nil)
	observer := wmSubscriber(t, srv, nil)
	enriched, _ := testutil.Subscribe(t, observer, "orders.enriched")

	r := wmNewRouter(t)
	r.AddMiddleware(middleware.CorrelationID)
	r.AddHandler("enrich", "orders", sub, "orders.enriched", handlerPub, func(msg *message.Message) ([]*message.Message, error) {
		out := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"enriched":%s}`, msg.Payload))
		return []*message.Message{out}, nil
	})
	wmRunRouter(t, r)

	for i := range n {
		in := wmJSON(`{"order":%d}`, i)
		middleware.SetCorrelationID(fmt.Sprint("corr-", i), in)
		require.NoError(t, pub.Publish("orders", in))
	}
	for i := range n {
		out := testutil.Receive(t, enriched)
		out.Ack()
		assert.JSONEq(t, fmt.Sprintf(`{"enriched":{"order":%d}}`, i), string(out.Payload))
		assert.Equal(t, fmt.Sprint("corr-", i), middleware.MessageCorrelationID(out))
	}
}

// wmShutdownUnderLoad runs a router with three handlers while six
// publishers keep publishing to them, shuts it down with shutdown once the
// handlers are busy, and goes on publishing 500 more messages. It returns
// how many handler calls had not finished, and how many had not started,
// when shutdown returned. Every goroutine must be gone at the end of the
// test.
func wmShutdownUnderLoad(t *testing.T, shutdown func(r *message.Router, cancelRun context.CancelFunc, runDone <-chan error)) (lateFinished, lateStarted int64) {
	t.Helper()
	ignoreExisting := goleak.IgnoreCurrent()
	// Registered first, so it runs after every other cleanup (clients
	// closed, server stopped).
	t.Cleanup(func() { goleak.VerifyNone(t, ignoreExisting) })

	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	topics := []string{"load.a", "load.b", "load.c"}

	var (
		shutdownReturned atomic.Bool
		handled          atomic.Int64
		started          atomic.Int64
		finished         atomic.Int64
		// at orders a call's end against the shutdown's return: a call
		// counted in handled before it is counted in finished after.
		at sync.Mutex
	)
	r := wmNewRouter(t)
	r.AddMiddleware(middleware.Recoverer)
	for _, topic := range topics {
		r.AddConsumerHandler("handle-"+topic, topic, sub, func(msg *message.Message) error {
			if shutdownReturned.Load() {
				started.Add(1)
			}
			time.Sleep(100 * time.Microsecond) // some work
			at.Lock()
			defer at.Unlock()
			handled.Add(1)
			if shutdownReturned.Load() {
				finished.Add(1)
			}
			return nil
		})
	}
	ctx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	testutil.Wait(t, r.Running(), "the router to run")

	stopPublishing := make(chan struct{})
	var publishers sync.WaitGroup
	var published atomic.Int64
	for i := range 6 {
		publishers.Add(1)
		go func() {
			defer publishers.Done()
			topic := topics[i%len(topics)]
			for n := 0; ; n++ {
				select {
				case <-stopPublishing:
					return
				default:
				}
				if assert.NoError(t, pub.Publish(topic, wmJSON(`{"n":%d}`, n))) {
					published.Add(1)
				}
			}
		}()
	}
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() { close(stopPublishing) })
		testutil.WaitGroup(t, &publishers, "the publishers to stop")
	}
	t.Cleanup(stop) // also when the test fails half way

	testutil.Eventually(t, func() bool { return handled.Load() >= 300 }, "the handlers are busy")
	shutdown(r, cancelRun, runDone)
	at.Lock()
	shutdownReturned.Store(true)
	handledAtShutdown := handled.Load()
	at.Unlock()

	// Publishing goes on: 500 more messages that nobody handles.
	publishedAtShutdown := published.Load()
	testutil.Eventually(t, func() bool { return published.Load() >= publishedAtShutdown+500 })
	stop()
	for _, topic := range topics {
		testutil.Eventually(t, func() bool { return testutil.Numsub(t, srv, topic) == 0 }, "still subscribed to %s", topic)
	}
	require.NoError(t, sub.Close())
	testutil.Eventually(t, func() bool { return handled.Load() == handledAtShutdown+finished.Load() })
	t.Logf("handled %d of %d published; %d handler call(s) running when the shutdown returned; subscriber stats %+v",
		handledAtShutdown, published.Load(), finished.Load(), sub.Stats())
	return finished.Load(), started.Load()
}

// Router shutdown by cancelling Run's context, under load: when Run
// returns, no handler runs any more and none starts later.
func TestRouter_ShutdownByContextUnderLoad(t *testing.T) {
	lateFinished, lateStarted := wmShutdownUnderLoad(t, func(r *message.Router, cancelRun context.CancelFunc, runDone <-chan error) {
		cancelRun()
		require.NoError(t, testutil.Wait(t, runDone, "Run to return"))
	})
	assert.Zero(t, lateStarted, "handler calls started after Run returned")
	assert.Zero(t, lateFinished, "handler calls still running when Run returned")
}

// Router.Close under load: Close returns, closes the handlers' Subscriber
// (so Redis has no subscriber left) and leaves no goroutine, and at most one
// handler call per handler is still running when it returned.
//
// A handler call may still be running when Close returns, which is
// Watermill's router (v1.5.1), not the adapter: Close waits for the running
// handler calls (runningHandlersWg) in parallel with the loops that start
// them (handlersWg), so a message that the loop receives after the first
// wait saw zero starts a call that Close does not wait for. It shows as well
// with Watermill's gochannel (most runs with -race). Since the adapter
// delivers one message at a time per subscription and waits for its Ack,
// there is at most one such call per handler. Cancelling Run's context (the
// test above) has no such window.
func TestRouter_CloseUnderLoad(t *testing.T) {
	lateFinished, lateStarted := wmShutdownUnderLoad(t, func(r *message.Router, _ context.CancelFunc, runDone <-chan error) {
		require.NoError(t, r.Close())
		require.NoError(t, testutil.Wait(t, runDone, "Run to return"))
	})
	assert.LessOrEqual(t, lateStarted, lateFinished)
	assert.LessOrEqual(t, lateFinished, int64(3), "more than one handler call per handler running after Close returned")
}

// TestUpstreamBug_RouterCloseReturnsWhileHandlerRuns shows, without Redis,
// that Watermill's Router.Close (v1.5.1) can return while a handler call
// runs, with Watermill's own gochannel: see TestRouter_CloseUnderLoad. It
// repeats the shutdown up to 100 times and fails at the first handler call
// that finishes after Close returned. Run with REDISPUBSUB_KNOWN_BUGS=1.
func TestUpstreamBug_RouterCloseReturnsWhileHandlerRuns(t *testing.T) {
	if os.Getenv("REDISPUBSUB_KNOWN_BUGS") == "" {
		t.Skip("known Watermill router bug, see tests/README.md; run with REDISPUBSUB_KNOWN_BUGS=1")
	}
	topics := []string{"a", "b", "c"}
	for run := range 100 {
		gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 100_000}, watermill.NopLogger{})
		r, err := message.NewRouter(message.RouterConfig{CloseTimeout: testutil.Timeout}, watermill.NopLogger{})
		require.NoError(t, err)
		var handled, running atomic.Int64
		for _, topic := range topics {
			r.AddConsumerHandler(topic, topic, gc, func(*message.Message) error {
				running.Add(1)
				defer running.Add(-1)
				time.Sleep(100 * time.Microsecond) // some work
				handled.Add(1)
				return nil
			})
		}
		runDone := make(chan error, 1)
		go func() { runDone <- r.Run(context.Background()) }()
		testutil.Wait(t, r.Running(), "the router to run")
		stop := make(chan struct{})
		var publishers sync.WaitGroup
		for _, topic := range topics {
			publishers.Add(1)
			go func() {
				defer publishers.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Microsecond):
						_ = gc.Publish(topic, message.NewMessage(watermill.NewUUID(), nil))
					}
				}
			}()
		}
		testutil.Eventually(t, func() bool { return handled.Load() >= 300 })
		require.NoError(t, r.Close())
		runningAtClose := running.Load()
		close(stop)
		testutil.WaitGroup(t, &publishers, "the publishers to stop")
		require.NoError(t, testutil.Wait(t, runDone, "Run to return"))
		require.NoError(t, gc.Close())
		testutil.Eventually(t, func() bool { return running.Load() == 0 })
		require.Zero(t, runningAtClose, "run %d: handler calls running when Router.Close returned", run)
	}
}
