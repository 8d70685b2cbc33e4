package redispubsub_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/eventtargettest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

const eventTargetTestTimeout = 10 * time.Second

type testPayload struct {
	Seq int `json:"seq"`
}

// newGoChannel returns an in-process Pub/Sub closed at the end of the test.
// BlockPublishUntilSubscriberAck keeps gochannel's delivery in publish order
// (without it, gochannel hands concurrent messages to a subscriber in any
// order).
func newGoChannel(t *testing.T, preserveContext bool) *gochannel.GoChannel {
	t.Helper()
	gc := gochannel.NewGoChannel(gochannel.Config{
		BlockPublishUntilSubscriberAck: true,
		PreserveContext:                preserveContext,
	}, watermill.NopLogger{})
	t.Cleanup(func() { _ = gc.Close() })
	return gc
}

func TestEventTarget_GoChannel(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	eventtargettest.Run(t, func(t *testing.T) (message.Publisher, message.Subscriber) {
		gc := newGoChannel(t, false)
		return gc, gc
	}, eventtargettest.Capabilities{
		LiveOnSubscribe: true,
		Timeout:         eventTargetTestTimeout,
	})
}

func TestEventTarget_NewRejectsNil(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false)

	_, err := redispubsub.NewEventTarget[testPayload](nil, gc)
	assert.Error(t, err)
	_, err = redispubsub.NewEventTarget[testPayload](gc, nil)
	assert.Error(t, err)
}

// TestEventTarget_MessageContextAndMetadata checks what DispatchEvent puts in
// the message, and that listeners get the message's context.
func TestEventTarget_MessageContextAndMetadata(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, true)
	target, err := redispubsub.NewEventTarget[testPayload](gc, gc)
	require.NoError(t, err)
	defer target.Close()

	type ctxKey struct{}
	got := make(chan struct {
		ctx context.Context
		ev  redispubsub.Event[testPayload]
	}, 1)
	_, err = target.AddEventListener(context.Background(), "call.responded:uuid-123", func(ctx context.Context, ev redispubsub.Event[testPayload]) {
		got <- struct {
			ctx context.Context
			ev  redispubsub.Event[testPayload]
		}{ctx, ev}
	})
	require.NoError(t, err)

	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	meta := message.NewMessage("ignored", nil)
	meta.Metadata.Set("trace", "t-1")
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[testPayload]{
		Type: "call.responded", ID: "uuid-123", Payload: testPayload{Seq: 5}, Message: meta,
	}))

	g := testutil.Wait(t, got, "the event")
	assert.Equal(t, "v", g.ctx.Value(ctxKey{}), "listener gets the message's context")
	assert.Equal(t, "call.responded", g.ev.Type)
	assert.Equal(t, "uuid-123", g.ev.ID)
	assert.Equal(t, testPayload{Seq: 5}, g.ev.Payload)
	assert.JSONEq(t, `{"seq":5}`, string(g.ev.Message.Payload))
	assert.Equal(t, "t-1", g.ev.Message.Metadata.Get("trace"))
	assert.NotEqual(t, "ignored", g.ev.Message.UUID, "a dispatched message gets a new UUID")
	assert.NotEmpty(t, g.ev.Message.UUID)
}

// TestEventTarget_EmptyPayloadIsZeroValue: an event sent without data (a
// TypeScript CustomEvent without detail) has the zero payload.
func TestEventTarget_EmptyPayloadIsZeroValue(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false)
	errs := make(chan error, 4)
	target, err := redispubsub.NewEventTarget[testPayload](gc, gc,
		redispubsub.WithErrorHandler(func(_ string, err error) { errs <- err }))
	require.NoError(t, err)
	defer target.Close()

	got := make(chan redispubsub.Event[testPayload], 2)
	_, err = target.AddEventListener(context.Background(), "ping", func(_ context.Context, ev redispubsub.Event[testPayload]) { got <- ev })
	require.NoError(t, err)
	require.NoError(t, gc.Publish("ping", message.NewMessage(watermill.NewUUID(), nil)))
	require.NoError(t, gc.Publish("ping", message.NewMessage(watermill.NewUUID(), []byte("null"))))
	for range 2 {
		assert.Equal(t, testPayload{}, testutil.Wait(t, got, "an event").Payload)
	}
	assert.Empty(t, errs)
}

// stubSubscriber lets a test decide how Subscribe behaves.
type stubSubscriber struct {
	subscribe func(ctx context.Context, topic string) (<-chan *message.Message, error)
}

func (s stubSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.subscribe(ctx, topic)
}

func (stubSubscriber) Close() error { return nil }

func TestEventTarget_SubscribeErrorIsReturned(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false)
	failure := errors.New("no server")
	var (
		mu    sync.Mutex
		calls int
	)
	sub := stubSubscriber{subscribe: func(ctx context.Context, topic string) (<-chan *message.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return nil, failure
		}
		return gc.Subscribe(ctx, topic)
	}}
	target, err := redispubsub.NewEventTarget[testPayload](gc, sub)
	require.NoError(t, err)
	defer target.Close()

	noop := func(context.Context, redispubsub.Event[testPayload]) {}
	h, err := target.AddEventListener(context.Background(), "t", noop)
	assert.ErrorIs(t, err, failure)
	assert.EqualError(t, err, `redispubsub: subscribe to "t": no server`, "an error that does not name the topic gets it")
	assert.Nil(t, h)

	h, err = target.AddEventListener(context.Background(), "t", noop)
	require.NoError(t, err, "the next listener subscribes again")
	h.Remove()
	mu.Lock()
	assert.Equal(t, 2, calls)
	mu.Unlock()
}

// pendingAdd is an AddEventListener running on a goroutine of its own
// while its Subscribe blocks until its context ends.
type pendingAdd struct {
	target  *redispubsub.EventTarget[testPayload] // on a gochannel Publisher
	result  <-chan error                          // what AddEventListener returned
	ctxDone <-chan struct{}                       // closed when Subscribe's context ended
}

// startPendingAdd calls AddEventListener(ctx, "t") on a goroutine, on an
// EventTarget whose Subscribe blocks until its context ends, and returns once
// Subscribe was called.
func startPendingAdd(t *testing.T, ctx context.Context) pendingAdd {
	t.Helper()
	gc := newGoChannel(t, false)
	entered, ctxDone := make(chan struct{}), make(chan struct{})
	sub := stubSubscriber{subscribe: func(ctx context.Context, _ string) (<-chan *message.Message, error) {
		close(entered)
		<-ctx.Done()
		close(ctxDone)
		return nil, ctx.Err()
	}}
	target, err := redispubsub.NewEventTarget[testPayload](gc, sub)
	require.NoError(t, err)
	result := make(chan error, 1)
	go func() {
		_, err := target.AddEventListener(ctx, "t", func(context.Context, redispubsub.Event[testPayload]) {})
		result <- err
	}()
	testutil.Wait(t, entered, "Subscribe to be called")
	return pendingAdd{target: target, result: result, ctxDone: ctxDone}
}

func TestEventTarget_AddWaitIsBoundedByContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	add := startPendingAdd(t, ctx)
	defer add.target.Close()

	cancel()
	assert.ErrorIs(t, testutil.Wait(t, add.result, "AddEventListener to return when its context was cancelled"), context.Canceled)
	testutil.Wait(t, add.ctxDone, "the pending subscription to be cancelled")
}

func TestEventTarget_CloseDuringSubscribe(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	add := startPendingAdd(t, context.Background())

	require.NoError(t, add.target.Close())
	assert.ErrorIs(t, testutil.Wait(t, add.result, "AddEventListener to return after Close"), redispubsub.ErrEventTargetClosed)
	// Close waited for the topic goroutine, which saw this.
	testutil.Wait(t, add.ctxDone, "the pending subscription's context to end")
}

func TestEventTarget_SubscriptionClosedBySubscriber(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false)
	var (
		mu     sync.Mutex
		closes []func()
	)
	sub := stubSubscriber{subscribe: func(ctx context.Context, _ string) (<-chan *message.Message, error) {
		// Closed by the test, or when ctx is done (Watermill's contract).
		ch := make(chan *message.Message)
		closeCh := sync.OnceFunc(func() { close(ch) })
		context.AfterFunc(ctx, closeCh)
		mu.Lock()
		closes = append(closes, closeCh)
		mu.Unlock()
		return ch, nil
	}}
	type report struct {
		topic string
		err   error
	}
	reports := make(chan report, 4)
	target, err := redispubsub.NewEventTarget[testPayload](gc, sub,
		redispubsub.WithErrorHandler(func(topic string, err error) { reports <- report{topic, err} }))
	require.NoError(t, err)
	defer target.Close()

	noop := func(context.Context, redispubsub.Event[testPayload]) {}
	_, err = target.AddEventListener(context.Background(), "t", noop)
	require.NoError(t, err)
	mu.Lock()
	closes[0]()
	mu.Unlock()

	r := testutil.Wait(t, reports, "the closed subscription's report")
	assert.Equal(t, "t", r.topic)
	assert.ErrorIs(t, r.err, redispubsub.ErrSubscriptionClosed)

	h, err := target.AddEventListener(context.Background(), "t", noop)
	require.NoError(t, err)
	mu.Lock()
	assert.Len(t, closes, 2, "the next listener subscribes again")
	mu.Unlock()
	h.Remove()
}

func TestEventTarget_ErrorHandlerPanicIsRecovered(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false)
	target, err := redispubsub.NewEventTarget[testPayload](gc, gc,
		redispubsub.WithErrorHandler(func(string, error) { panic("hook") }))
	require.NoError(t, err)
	defer target.Close()

	got := make(chan int, 2)
	_, err = target.AddEventListener(context.Background(), "t", func(_ context.Context, ev redispubsub.Event[testPayload]) {
		got <- ev.Payload.Seq
		if ev.Payload.Seq == 0 {
			panic("listener")
		}
	})
	require.NoError(t, err)
	for i := range 2 {
		require.NoError(t, target.DispatchEvent(context.Background(), redispubsub.Event[testPayload]{Type: "t", Payload: testPayload{Seq: i}}))
		assert.Equal(t, i, testutil.Wait(t, got, "an event"))
	}
}

// waitForGoroutine waits until a goroutine runs a function whose name
// contains fn: the way to know that a goroutine blocks where the test wants
// it, when nothing else tells.
func waitForGoroutine(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	testutil.Eventually(t, func() bool { return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) },
		"a goroutine in %s", fn)
}

// TestEventTarget_FirstListenerGivesUp: the first listener of a topic makes
// its Subscribe on its own AddEventListener. When that call's context ends
// while a second listener waits for the same subscription, the first returns
// its context's error at once, its Subscribe is cancelled, and the second
// subscribes anew and gets the topic's events.
func TestEventTarget_FirstListenerGivesUp(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	gc := newGoChannel(t, false)
	var calls atomic.Int32
	entered := make(chan struct{}, 2)
	sub := stubSubscriber{subscribe: func(ctx context.Context, topic string) (<-chan *message.Message, error) {
		entered <- struct{}{}
		if calls.Add(1) == 1 {
			<-ctx.Done() // the first Subscribe waits until it is given up
			return nil, ctx.Err()
		}
		return gc.Subscribe(ctx, topic)
	}}
	target, err := redispubsub.NewEventTarget[testPayload](gc, sub)
	require.NoError(t, err)
	defer target.Close()

	firstCtx, cancelFirst := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := target.AddEventListener(firstCtx, "t", func(context.Context, redispubsub.Event[testPayload]) {})
		first <- err
	}()
	testutil.Wait(t, entered, "Subscribe to be called")

	got := make(chan int, 1)
	second := make(chan error, 1)
	var handle *redispubsub.Listener
	go func() {
		h, err := target.AddEventListener(context.Background(), "t", func(_ context.Context, ev redispubsub.Event[testPayload]) {
			got <- ev.Payload.Seq
		})
		handle = h
		second <- err
	}()
	waitForGoroutine(t, "redispubsub.(*EventTarget[...]).await")

	cancelFirst()
	assert.ErrorIs(t, testutil.Wait(t, first, "the first AddEventListener to return when its context ended"), context.Canceled)
	require.NoError(t, testutil.Wait(t, second, "the second AddEventListener to return"))
	assert.EqualValues(t, 2, calls.Load(), "the second listener subscribed anew")

	require.NoError(t, target.DispatchEvent(context.Background(), redispubsub.Event[testPayload]{Type: "t", Payload: testPayload{Seq: 7}}))
	assert.Equal(t, 7, testutil.Wait(t, got, "the event"))
	handle.Remove()
}
