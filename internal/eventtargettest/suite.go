// Package eventtargettest is the semantic test suite of redispubsub.EventTarget,
// run over any Watermill Publisher and Subscriber: Watermill's gochannel in the
// root package's tests, this module's Redis Pub/Sub adapter and
// watermill-redisstream in tests/.
//
// Each test of the suite is one subtest of Run, and checks one thing a caller
// of EventTarget may rely on:
//
//   - the first listener of a topic makes one subscription and the last
//     removal ends it, leaving no goroutine;
//   - AddEventListener returns only when the subscription is live, so an event
//     dispatched right after is received;
//   - every listener of a topic gets every event, in order;
//   - a panicking or slow listener on one topic neither crashes the target nor
//     delays another topic;
//   - a payload that does not decode is reported to the error hook, never a
//     crash;
//   - Once, WithContext, and removing listeners from inside listeners;
//   - Close removes everything and leaves no goroutine.
package eventtargettest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// Factory returns the Publisher and Subscriber of one subtest. They must be
// connected (what pub publishes on a topic, sub receives) and fresh: no
// other test shares them. The factory registers their cleanup with
// t.Cleanup; the suite closes its EventTarget before that cleanup runs, and
// never closes them itself.
type Factory func(t *testing.T) (message.Publisher, message.Subscriber)

// Capabilities tells the suite what the Pub/Sub under test can do, so that it
// checks what applies and skips, saying so, what does not.
type Capabilities struct {
	// LiveOnSubscribe reports that the Subscriber's Subscribe returns only
	// after the subscription is live: whatever is published after it returns
	// is delivered. This module's Subscriber, gochannel (not persistent) and
	// watermill-redisstream with a consumer group have it. Without it, the
	// subtests that dispatch events are skipped, since an event dispatched
	// right after AddEventListener may be lost.
	LiveOnSubscribe bool

	// BrokerSubscriptions, when not nil, returns how many subscriptions the
	// broker behind sub holds for topic: on Redis, PUBSUB NUMSUB of the
	// topic's channel (channel prefix included). The suite polls it, within
	// Timeout, to see a topic go to 1 when its first listener is added and
	// back to 0 when its last listener is removed. It is called from the
	// subtest's goroutine and may fail t.
	//
	// Whether or not it is set, the suite counts the Subscribe calls that the
	// EventTarget makes, and whether their contexts are still live, by
	// wrapping the Subscriber.
	BrokerSubscriptions func(t *testing.T, sub message.Subscriber, topic string) int

	// Timeout bounds every wait of the suite. Default: 10s.
	Timeout time.Duration
}

// Run runs the suite, one subtest per behaviour, each with its own Publisher
// and Subscriber from factory.
//
// The check that Close leaves no goroutine looks for goroutines running the
// EventTarget's code in the whole process, so Run must not run in parallel
// with other tests that use an EventTarget.
func Run(t *testing.T, factory Factory, caps Capabilities) {
	if caps.Timeout <= 0 {
		caps.Timeout = 10 * time.Second
	}
	tests := []struct {
		name     string
		dispatch bool // needs LiveOnSubscribe
		fn       func(t *testing.T, e *env)
	}{
		{"FirstListenerSubscribesLastRemovalEndsIt", false, testSubscriptionLifecycle},
		{"ConcurrentFirstListenersShareOneSubscription", true, testConcurrentFirstListeners},
		{"EventDispatchedRightAfterAddIsReceived", true, testDispatchRightAfterAdd},
		{"EveryListenerGetsEveryEventInOrder", true, testFanOutInOrder},
		{"PanickingListenerIsReportedAndIsolated", true, testPanickingListener},
		{"SlowListenerDoesNotDelayOtherTopics", true, testSlowListener},
		{"UndecodablePayloadIsReported", true, testUndecodablePayload},
		{"OnceListenerRunsOnce", true, testOnce},
		{"ListenersChangeListenersFromInside", true, testChangeFromInside},
		{"ContextRemovesListener", false, testWithContext},
		{"DoneContextAddsNothing", false, testDoneContext},
		{"InvalidTopicsAreRejected", false, testInvalidTopics},
		{"CloseRemovesEverything", false, testClose},
		{"CloseWaitsForRunningListener", true, testCloseWaits},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.dispatch && !caps.LiveOnSubscribe {
				t.Skip("Subscriber is not live when Subscribe returns (Capabilities.LiveOnSubscribe)")
			}
			e := newEnv(t, factory, caps)
			tc.fn(t, e)
			if !t.Failed() {
				e.requireNoErrors(t)
			}
		})
	}
}

// payload is the event type of the suite.
type payload struct {
	Seq  int    `json:"seq"`
	Text string `json:"text,omitempty"`
}

type event = redispubsub.Event[payload]

type hookError struct {
	topic string
	err   error
}

// env is one subtest's EventTarget and what it runs on.
type env struct {
	caps    Capabilities
	timeout time.Duration
	pub     message.Publisher
	rawSub  message.Subscriber
	sub     *countingSubscriber
	target  *redispubsub.EventTarget[payload]
	errs    chan hookError
}

func newEnv(t *testing.T, factory Factory, caps Capabilities) *env {
	t.Helper()
	pub, sub := factory(t)
	require.NotNil(t, pub, "factory returned a nil Publisher")
	require.NotNil(t, sub, "factory returned a nil Subscriber")
	e := &env{
		caps:    caps,
		timeout: caps.Timeout,
		pub:     pub,
		rawSub:  sub,
		sub:     &countingSubscriber{Subscriber: sub},
		errs:    make(chan hookError, 256),
	}
	target, err := redispubsub.NewEventTarget[payload](pub, e.sub,
		redispubsub.WithErrorHandler(func(topic string, err error) {
			select {
			case e.errs <- hookError{topic, err}:
			default:
				t.Errorf("error hook: more errors than expected; dropped %q: %v", topic, err)
			}
		}),
		redispubsub.WithLogger(watermill.NopLogger{}),
	)
	require.NoError(t, err)
	e.target = target
	// Registered after the factory's cleanup, so it runs before it.
	t.Cleanup(func() { _ = target.Close() })
	return e
}

// eventType returns an event type that no other test uses.
func (e *env) eventType(name string) string {
	return "ett." + name + "." + watermill.NewShortUUID()
}

func (e *env) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) add(t *testing.T, topic string, fn func(context.Context, event), opts ...redispubsub.ListenerOption) *redispubsub.Listener {
	t.Helper()
	h, err := e.target.AddEventListener(e.ctx(t), topic, fn, opts...)
	require.NoError(t, err, "AddEventListener(%q)", topic)
	require.NotNil(t, h)
	return h
}

func (e *env) dispatch(t *testing.T, typ, id string, seq int) {
	t.Helper()
	err := e.target.DispatchEvent(e.ctx(t), event{Type: typ, ID: id, Payload: payload{Seq: seq}})
	require.NoError(t, err, "DispatchEvent(%q, %q, %d)", typ, id, seq)
}

func (e *env) nextError(t *testing.T) hookError {
	t.Helper()
	select {
	case he := <-e.errs:
		return he
	case <-time.After(e.timeout):
		t.Fatalf("no error reported to the error hook within %v", e.timeout)
		return hookError{}
	}
}

func (e *env) requireNoErrors(t *testing.T) {
	t.Helper()
	select {
	case he := <-e.errs:
		t.Fatalf("unexpected error reported on topic %q: %v", he.topic, he.err)
	default:
	}
}

// requireSubscriptions checks the EventTarget's live Subscribe calls of
// topic, and polls the broker's count when the capabilities have one.
func (e *env) requireSubscriptions(t *testing.T, topic string, want int) {
	t.Helper()
	e.eventually(t, fmt.Sprintf("live Subscribe calls of %q", topic), want,
		func() int { return e.sub.active(topic) })
	if e.caps.BrokerSubscriptions != nil {
		e.eventually(t, fmt.Sprintf("broker subscriptions of %q", topic), want,
			func() int { return e.caps.BrokerSubscriptions(t, e.rawSub, topic) })
	}
}

// eventually polls count from the test goroutine until it returns want or
// the timeout passes. It is for state that has no event to wait on (a
// broker's subscription count, a cancelled context); everything else waits
// on channels.
func (e *env) eventually(t *testing.T, what string, want int, count func() int) {
	t.Helper()
	deadline := time.Now().Add(e.timeout)
	for {
		got := count()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d, want %d (waited %v)", what, got, want, e.timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a listener that records the events it gets.
type recorder struct {
	ch chan event
}

func newRecorder() *recorder { return &recorder{ch: make(chan event, 1024)} }

func (r *recorder) listen(_ context.Context, ev event) { r.ch <- ev }

func (r *recorder) next(t *testing.T, timeout time.Duration) event {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
		return event{}
	}
}

// requireSeqs receives len(seqs) events and checks their sequence numbers.
func (r *recorder) requireSeqs(t *testing.T, timeout time.Duration, seqs ...int) []event {
	t.Helper()
	evs := make([]event, 0, len(seqs))
	got := make([]int, 0, len(seqs))
	for range seqs {
		ev := r.next(t, timeout)
		evs = append(evs, ev)
		got = append(got, ev.Payload.Seq)
	}
	require.Equal(t, seqs, got, "events received in this order")
	return evs
}

// requireEmpty checks that r has nothing more. Listeners of a topic run one
// after another on one goroutine, so once a listener of the topic got event n,
// a listener of the same topic added before it is done with event n.
func (r *recorder) requireEmpty(t *testing.T) {
	t.Helper()
	select {
	case ev := <-r.ch:
		t.Fatalf("unexpected event seq %d (type %q id %q)", ev.Payload.Seq, ev.Type, ev.ID)
	default:
	}
}

// countingSubscriber counts the Subscribe calls of the EventTarget and knows
// which of them are still live (their context not done).
type countingSubscriber struct {
	message.Subscriber

	mu   sync.Mutex
	ctxs map[string][]context.Context
}

func (c *countingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	ch, err := c.Subscriber.Subscribe(ctx, topic)
	if err == nil {
		c.mu.Lock()
		if c.ctxs == nil {
			c.ctxs = make(map[string][]context.Context)
		}
		c.ctxs[topic] = append(c.ctxs[topic], ctx)
		c.mu.Unlock()
	}
	return ch, err
}

func (c *countingSubscriber) calls(topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ctxs[topic])
}

func (c *countingSubscriber) active(topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ctx := range c.ctxs[topic] {
		if ctx.Err() == nil {
			n++
		}
	}
	return n
}

func (c *countingSubscriber) activeTotal() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ctxs := range c.ctxs {
		for _, ctx := range ctxs {
			if ctx.Err() == nil {
				n++
			}
		}
	}
	return n
}

// requireNoTargetGoroutines waits, within the timeout, until no goroutine
// runs code of the EventTarget (none does when it has no listener). It polls, as goleak does: a goroutine that
// signalled its end (a WaitGroup's Done) may not have exited yet.
func (e *env) requireNoTargetGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(e.timeout)
	for {
		found := targetGoroutines()
		if len(found) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines of the EventTarget left:\n%s", strings.Join(found, "\n\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// targetGoroutines returns the stacks of the goroutines running code of the
// EventTarget, other than the caller's.
func targetGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the caller
			continue
		}
		if strings.Contains(g, "watermill-redispubsub.(*EventTarget[") ||
			strings.Contains(g, "watermill-redispubsub.(*Listener)") {
			found = append(found, g)
		}
	}
	return found
}

func testSubscriptionLifecycle(t *testing.T, e *env) {
	typ := e.eventType("lifecycle")
	topicWithID, err := redispubsub.Topic(typ, "id-1")
	require.NoError(t, err)
	r := newRecorder()

	h1 := e.add(t, typ, r.listen)
	assert.Equal(t, 1, e.sub.calls(typ), "first listener subscribes")
	e.requireSubscriptions(t, typ, 1)

	h2 := e.add(t, typ, r.listen)
	assert.Equal(t, 1, e.sub.calls(typ), "second listener shares the subscription")
	e.requireSubscriptions(t, typ, 1)

	h3 := e.add(t, topicWithID, r.listen)
	assert.Equal(t, 1, e.sub.calls(topicWithID), "type:id is a topic of its own")
	e.requireSubscriptions(t, topicWithID, 1)
	e.requireSubscriptions(t, typ, 1)

	h1.Remove()
	h1.Remove() // idempotent
	e.requireSubscriptions(t, typ, 1)

	e.target.RemoveEventListener(h2)
	e.requireSubscriptions(t, typ, 0)
	e.requireSubscriptions(t, topicWithID, 1)
	e.target.RemoveEventListener(h2) // idempotent

	h4 := e.add(t, typ, r.listen)
	assert.Equal(t, 2, e.sub.calls(typ), "a listener after the last removal subscribes again")
	e.requireSubscriptions(t, typ, 1)

	h4.Remove()
	h3.Remove()
	e.requireSubscriptions(t, typ, 0)
	e.requireSubscriptions(t, topicWithID, 0)
	// Nothing of a topic is left once its last listener is gone, even
	// before Close.
	e.requireNoTargetGoroutines(t)
	r.requireEmpty(t)
}

func testConcurrentFirstListeners(t *testing.T, e *env) {
	typ := e.eventType("concurrent")
	const n = 16
	recs := make([]*recorder, n)
	handles := make([]*redispubsub.Listener, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		recs[i] = newRecorder()
		wg.Add(1)
		go func() {
			defer wg.Done()
			handles[i], errs[i] = e.target.AddEventListener(e.ctx(t), typ, recs[i].listen)
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		require.NotNil(t, handles[i])
	}
	assert.Equal(t, 1, e.sub.calls(typ), "concurrent first listeners share one subscription")
	e.requireSubscriptions(t, typ, 1)

	e.dispatch(t, typ, "", 7)
	for _, r := range recs {
		r.requireSeqs(t, e.timeout, 7)
	}
	for _, h := range handles {
		h.Remove()
	}
	e.requireSubscriptions(t, typ, 0)
}

func testDispatchRightAfterAdd(t *testing.T, e *env) {
	for i := range 20 {
		typ := e.eventType("live")
		id := ""
		if i%2 == 1 {
			id = fmt.Sprintf("id-%d", i)
		}
		topic, err := redispubsub.Topic(typ, id)
		require.NoError(t, err)
		r := newRecorder()
		h := e.add(t, topic, r.listen)
		e.dispatch(t, typ, id, i)
		ev := r.requireSeqs(t, e.timeout, i)[0]
		assert.Equal(t, typ, ev.Type)
		assert.Equal(t, id, ev.ID)
		h.Remove()
	}
}

func testFanOutInOrder(t *testing.T, e *env) {
	typ := e.eventType("fanout")
	const id = "order-42"
	topic, err := redispubsub.Topic(typ, id)
	require.NoError(t, err)

	recs := []*recorder{newRecorder(), newRecorder(), newRecorder()}
	for _, r := range recs {
		e.add(t, topic, r.listen)
	}
	typeOnly := newRecorder()
	e.add(t, typ, typeOnly.listen)

	const n = 50
	seqs := make([]int, n)
	for i := range n {
		seqs[i] = i
		e.dispatch(t, typ, id, i)
	}
	for _, r := range recs {
		for _, ev := range r.requireSeqs(t, e.timeout, seqs...) {
			assert.Equal(t, typ, ev.Type)
			assert.Equal(t, id, ev.ID)
			require.NotNil(t, ev.Message, "event carries its message")
			assert.NotEmpty(t, ev.Message.UUID)
		}
	}

	// The type-only topic got none of them: a marker dispatched on it now is
	// the first thing its listener gets, and the type:id listeners do not.
	e.dispatch(t, typ, "", -1)
	ev := typeOnly.requireSeqs(t, e.timeout, -1)[0]
	assert.Equal(t, typ, ev.Type)
	assert.Empty(t, ev.ID)
	e.dispatch(t, typ, id, n)
	for _, r := range recs {
		r.requireSeqs(t, e.timeout, n)
	}
}

func testPanickingListener(t *testing.T, e *env) {
	typA := e.eventType("panic")
	typB := e.eventType("calm")
	boom := errors.New("boom")
	e.add(t, typA, func(_ context.Context, ev event) {
		if ev.Payload.Seq == 0 {
			panic(boom)
		}
		panic(fmt.Sprintf("panic %d", ev.Payload.Seq))
	})
	after := newRecorder()
	e.add(t, typA, after.listen)
	other := newRecorder()
	e.add(t, typB, other.listen)

	e.dispatch(t, typA, "", 0)
	e.dispatch(t, typA, "", 1)
	after.requireSeqs(t, e.timeout, 0, 1)

	for i := range 2 {
		he := e.nextError(t)
		assert.Equal(t, typA, he.topic)
		assert.ErrorIs(t, he.err, redispubsub.ErrListenerPanic)
		if i == 0 {
			assert.ErrorIs(t, he.err, boom, "an error panic value is wrapped")
		} else {
			assert.Contains(t, he.err.Error(), "panic 1")
		}
	}

	e.dispatch(t, typB, "", 2)
	other.requireSeqs(t, e.timeout, 2)
	e.dispatch(t, typA, "", 3)
	after.requireSeqs(t, e.timeout, 3)
	assert.ErrorIs(t, e.nextError(t).err, redispubsub.ErrListenerPanic)
}

func testSlowListener(t *testing.T, e *env) {
	typA := e.eventType("slow")
	typB := e.eventType("fast")
	entered := make(chan int, 16)
	release := make(chan struct{})
	e.add(t, typA, func(_ context.Context, ev event) {
		entered <- ev.Payload.Seq
		select {
		case <-release:
		case <-time.After(e.timeout):
		}
	})
	fast := newRecorder()
	e.add(t, typB, fast.listen)

	// Publishers may wait for the Ack (gochannel can), so dispatch on the
	// slow topic from another goroutine.
	dispatched := make(chan error, 1)
	ctx := e.ctx(t)
	go func() {
		err := e.target.DispatchEvent(ctx, event{Type: typA, Payload: payload{Seq: 0}})
		if err == nil {
			err = e.target.DispatchEvent(ctx, event{Type: typA, Payload: payload{Seq: 1}})
		}
		dispatched <- err
	}()
	select {
	case seq := <-entered:
		require.Equal(t, 0, seq)
	case <-time.After(e.timeout):
		t.Fatal("slow listener not called")
	}

	for i := range 5 {
		e.dispatch(t, typB, "", 100+i)
		fast.requireSeqs(t, e.timeout, 100+i)
	}

	close(release)
	select {
	case seq := <-entered:
		require.Equal(t, 1, seq, "the slow topic goes on, in order")
	case <-time.After(e.timeout):
		t.Fatal("slow topic stalled")
	}
	select {
	case err := <-dispatched:
		require.NoError(t, err)
	case <-time.After(e.timeout):
		t.Fatal("DispatchEvent on the slow topic did not return")
	}
}

func testUndecodablePayload(t *testing.T, e *env) {
	typ := e.eventType("undecodable")
	r := newRecorder()
	e.add(t, typ, r.listen)

	for _, body := range []string{`{"seq":"not a number"}`, `[1,2,3]`} {
		msg := message.NewMessage(watermill.NewUUID(), []byte(body))
		require.NoError(t, e.pub.Publish(typ, msg))
		he := e.nextError(t)
		assert.Equal(t, typ, he.topic)
		assert.ErrorIs(t, he.err, redispubsub.ErrPayloadDecode)
	}

	e.dispatch(t, typ, "", 1)
	r.requireSeqs(t, e.timeout, 1)
	r.requireEmpty(t)
}

func testOnce(t *testing.T, e *env) {
	typ := e.eventType("once")
	once := newRecorder()
	hOnce := e.add(t, typ, once.listen, redispubsub.Once())
	all := newRecorder()
	e.add(t, typ, all.listen)

	for i := range 3 {
		e.dispatch(t, typ, "", i)
	}
	all.requireSeqs(t, e.timeout, 0, 1, 2)
	once.requireSeqs(t, e.timeout, 0)
	once.requireEmpty(t)
	hOnce.Remove() // no-op after it ran

	// A Once listener alone on its topic ends the subscription after its event.
	typ2 := e.eventType("once-alone")
	alone := newRecorder()
	e.add(t, typ2, alone.listen, redispubsub.Once())
	e.requireSubscriptions(t, typ2, 1)
	e.dispatch(t, typ2, "", 9)
	alone.requireSeqs(t, e.timeout, 9)
	e.requireSubscriptions(t, typ2, 0)
}

func testChangeFromInside(t *testing.T, e *env) {
	typ := e.eventType("inside")
	var (
		selfHandle   atomic.Pointer[redispubsub.Listener]
		victimHandle atomic.Pointer[redispubsub.Listener]
		added        = newRecorder()
		addErr       = make(chan error, 1)
	)
	self := newRecorder()
	remover := func(ctx context.Context, ev event) {
		if ev.Payload.Seq != 0 {
			return
		}
		victimHandle.Load().Remove()
		// Adding to a topic that is live does not wait for anything.
		_, err := e.target.AddEventListener(ctx, typ, added.listen)
		addErr <- err
	}
	selfRemover := func(ctx context.Context, ev event) {
		self.listen(ctx, ev)
		selfHandle.Load().Remove()
	}
	victim := newRecorder()
	last := newRecorder()

	e.add(t, typ, remover)
	selfHandle.Store(e.add(t, typ, selfRemover))
	victimHandle.Store(e.add(t, typ, victim.listen))
	e.add(t, typ, last.listen)

	for i := range 3 {
		e.dispatch(t, typ, "", i)
	}
	last.requireSeqs(t, e.timeout, 0, 1, 2)
	added.requireSeqs(t, e.timeout, 1, 2)
	self.requireSeqs(t, e.timeout, 0)
	self.requireEmpty(t)
	victim.requireEmpty(t)
	select {
	case err := <-addErr:
		require.NoError(t, err)
	default:
		t.Fatal("listener added from inside a listener: no result")
	}
}

func testWithContext(t *testing.T, e *env) {
	typ := e.eventType("ctx")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newRecorder()
	h := e.add(t, typ, r.listen, redispubsub.WithContext(ctx))
	e.requireSubscriptions(t, typ, 1)
	if e.caps.LiveOnSubscribe {
		e.dispatch(t, typ, "", 0)
		r.requireSeqs(t, e.timeout, 0)
	}
	cancel()
	e.requireSubscriptions(t, typ, 0)
	h.Remove() // no-op
	r.requireEmpty(t)
}

func testDoneContext(t *testing.T, e *env) {
	typ := e.eventType("done")
	done, cancel := context.WithCancel(context.Background())
	cancel()
	r := newRecorder()

	h, err := e.target.AddEventListener(done, typ, r.listen)
	assert.ErrorIs(t, err, context.Canceled, "a done wait context adds nothing")
	assert.Nil(t, h)

	h, err = e.target.AddEventListener(e.ctx(t), typ, r.listen, redispubsub.WithContext(done))
	assert.ErrorIs(t, err, context.Canceled, "a done lifetime context adds nothing")
	assert.Nil(t, h)

	assert.Equal(t, 0, e.sub.calls(typ))
	e.requireSubscriptions(t, typ, 0)
}

func testInvalidTopics(t *testing.T, e *env) {
	noop := func(context.Context, event) {}
	for _, topic := range []string{"", ":id", ":"} {
		h, err := e.target.AddEventListener(e.ctx(t), topic, noop)
		assert.ErrorIs(t, err, redispubsub.ErrInvalidEventType, "AddEventListener(%q)", topic)
		assert.Nil(t, h)
	}
	_, err := e.target.AddEventListener(e.ctx(t), e.eventType("nil"), nil)
	assert.Error(t, err, "nil listener")

	for _, typ := range []string{"", "a:b"} {
		err := e.target.DispatchEvent(e.ctx(t), event{Type: typ, ID: "x"})
		assert.ErrorIs(t, err, redispubsub.ErrInvalidEventType, "DispatchEvent type %q", typ)
	}
	assert.Equal(t, 0, e.sub.activeTotal())
}

func testClose(t *testing.T, e *env) {
	typA := e.eventType("closeA")
	typB := e.eventType("closeB")
	topicB, err := redispubsub.Topic(typB, "id")
	require.NoError(t, err)
	r := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hA1 := e.add(t, typA, r.listen)
	e.add(t, typA, r.listen, redispubsub.Once())
	hB := e.add(t, topicB, r.listen, redispubsub.WithContext(ctx))
	e.requireSubscriptions(t, typA, 1)
	e.requireSubscriptions(t, topicB, 1)

	require.NoError(t, e.target.Close())
	assert.Equal(t, 0, e.sub.activeTotal(), "Close ends every subscription before it returns")
	e.requireSubscriptions(t, typA, 0)
	e.requireSubscriptions(t, topicB, 0)
	e.requireNoTargetGoroutines(t)

	require.NoError(t, e.target.Close(), "Close is idempotent")
	hA1.Remove()
	e.target.RemoveEventListener(hB)
	cancel()

	h, err := e.target.AddEventListener(e.ctx(t), typA, r.listen)
	assert.ErrorIs(t, err, redispubsub.ErrEventTargetClosed)
	assert.Nil(t, h)
	err = e.target.DispatchEvent(e.ctx(t), event{Type: typA})
	assert.ErrorIs(t, err, redispubsub.ErrEventTargetClosed)
	assert.Equal(t, 0, e.sub.activeTotal())
	e.requireNoTargetGoroutines(t)
	r.requireEmpty(t)
}

func testCloseWaits(t *testing.T, e *env) {
	typ := e.eventType("closewait")
	entered := make(chan struct{})
	release := make(chan struct{})
	var returned atomic.Bool
	e.add(t, typ, func(context.Context, event) {
		close(entered)
		select {
		case <-release:
		case <-time.After(e.timeout):
		}
		returned.Store(true)
	})

	dispatched := make(chan error, 1)
	ctx := e.ctx(t)
	go func() { dispatched <- e.target.DispatchEvent(ctx, event{Type: typ}) }()
	select {
	case <-entered:
	case <-time.After(e.timeout):
		t.Fatal("listener not called")
	}

	closed := make(chan error, 1)
	go func() { closed <- e.target.Close() }()
	// Close ends the subscription first, then waits for the listener.
	e.requireSubscriptions(t, typ, 0)
	select {
	case <-closed:
		t.Fatal("Close returned while a listener was running")
	default:
	}
	close(release)
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(e.timeout):
		t.Fatal("Close did not return")
	}
	assert.True(t, returned.Load(), "Close returned before the listener did")
	e.requireNoTargetGoroutines(t)
	select {
	case err := <-dispatched:
		require.NoError(t, err)
	case <-time.After(e.timeout):
		t.Fatal("DispatchEvent did not return")
	}
}
