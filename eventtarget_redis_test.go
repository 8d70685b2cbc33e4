package redispubsub_test

// The EventTarget on this package's Redis Pub/Sub: many topics added and
// removed, the wording of its errors, and an ACL user. The semantic suite
// runs on Redis in tests/bridge_test.go.

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// newRedisEventTarget returns an EventTarget over a Publisher and a
// Subscriber on client, all closed at the end of the test (the EventTarget
// first). configure may adjust the Subscriber's config.
func newRedisEventTarget(t *testing.T, client redis.UniversalClient, prefix string, configure func(*redispubsub.SubscriberConfig)) (*redispubsub.EventTarget[testPayload], *redispubsub.Subscriber) {
	t.Helper()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, ChannelPrefix: prefix}, nil)
	require.NoError(t, err)
	config := redispubsub.SubscriberConfig{Client: client, ChannelPrefix: prefix}
	if configure != nil {
		configure(&config)
	}
	sub, err := redispubsub.NewSubscriber(config, nil)
	require.NoError(t, err)
	target, err := redispubsub.NewEventTarget[testPayload](pub, sub)
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, target.Close())
		assert.NoError(t, sub.Close())
		assert.NoError(t, pub.Close())
	})
	return target, sub
}

// verifyNoLeakAtCleanup checks, after every cleanup of t registered later
// (those run first), that no goroutine started after this call is left.
func verifyNoLeakAtCleanup(t *testing.T) {
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, current) })
}

// pubsubChannels is how many channels matching pattern have subscribers,
// the Subscribers' liveness probe channels left out.
func pubsubChannels(t *testing.T, srv *redistest.Server, pattern string) int {
	t.Helper()
	n := 0
	for _, ch := range srv.Do(t, "PUBSUB", "CHANNELS", pattern).([]any) {
		if !strings.Contains(ch.(string), redispubsub.ProbeTopicPrefix) {
			n++
		}
	}
	return n
}

// TestEventTarget_ManyTopicsAddedAndRemoved: 100,000 topics (10,000 under
// -race or -short) with one listener each, each receiving its own event,
// then all listeners removed: Redis then has no subscriber left on any of
// them, and the EventTarget and the Subscriber no goroutine of theirs.
func TestEventTarget_ManyTopicsAddedAndRemoved(t *testing.T) {
	verifyNoLeakAtCleanup(t)
	n := 100_000
	if testutil.Race || testing.Short() {
		n = 10_000
	}
	const (
		prefix  = "many:"
		workers = 1000
		timeout = 2 * time.Minute // only fires when something hangs
	)
	srv := redistest.Start(t)
	target, sub := newRedisEventTarget(t, srv.NewClient(t), prefix, nil)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	topic := func(i int) string { return "many:" + strconv.Itoa(i) }

	// The Subscriber's connection is up after a first topic: the goroutines
	// counted from here on are those of the topics.
	h, err := target.AddEventListener(ctx, "warm-up", func(context.Context, redispubsub.Event[testPayload]) {})
	require.NoError(t, err)
	h.Remove()
	testutil.Eventually(t, func() bool { return pubsubChannels(t, srv, prefix+"*") == 0 }, "warm-up unsubscribed")
	// And its first liveness probe came back: the probe's PUBLISH started
	// the client's own goroutines (go-redis's), which are not the topics'.
	testutil.Eventually(t, func() bool { return sub.Health(ctx) == nil }, "the Subscriber is ready")
	idle := runtime.NumGoroutine()

	var (
		received atomic.Int64
		wrong    atomic.Int64
		all      = make(chan struct{})
	)
	handles := make([]*redispubsub.Listener, n)
	testutil.Parallel(t, n, workers, func(i int) error {
		var got atomic.Bool
		h, err := target.AddEventListener(ctx, topic(i), func(_ context.Context, ev redispubsub.Event[testPayload]) {
			if ev.Payload.Seq != i || !got.CompareAndSwap(false, true) {
				wrong.Add(1)
				return
			}
			if received.Add(1) == int64(n) {
				close(all)
			}
		})
		handles[i] = h
		return err
	})
	require.Equal(t, n, pubsubChannels(t, srv, prefix+"*"), "one Redis subscription per topic")

	testutil.Parallel(t, n, workers, func(i int) error {
		typ, id := redispubsub.SplitTopic(topic(i))
		return target.DispatchEvent(ctx, redispubsub.Event[testPayload]{Type: typ, ID: id, Payload: testPayload{Seq: i}})
	})
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("%d of %d topics received their event", received.Load(), n)
	}

	testutil.Parallel(t, n, workers, func(i int) error {
		handles[i].Remove()
		return nil
	})
	testutil.EventuallyWithin(t, timeout, func() bool { return pubsubChannels(t, srv, prefix+"*") == 0 }, "every topic unsubscribed")
	assert.Zero(t, numsubSum(t, srv, prefix+topic(0), prefix+topic(n-1)), "PUBSUB NUMSUB")
	// One more than idle: the Publisher's queue writer, which concurrent
	// DispatchEvents start and which lives until Close. (Before the
	// Subscriber was ready was waited for, a goroutine of the warm-up
	// still ending when idle was counted often hid it.)
	testutil.GoroutinesAtMost(t, idle+1)
	assert.Zero(t, wrong.Load(), "events received on another topic, or twice")
}

// numsubSum sums PUBSUB NUMSUB of channels.
func numsubSum(t *testing.T, srv *redistest.Server, channels ...string) int64 {
	t.Helper()
	args := append([]any{"PUBSUB", "NUMSUB"}, toAny(channels)...)
	reply := srv.Do(t, args...).([]any)
	var sum int64
	for i := 1; i < len(reply); i += 2 {
		sum += reply[i].(int64)
	}
	return sum
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// TestEventTarget_SubscribeErrorsNameTheTopicOnce: the Subscriber's errors
// already name the topic, and the EventTarget does not repeat it, nor the
// package's "redispubsub:". (A regression test: AddEventListener returned
// `redispubsub: subscribe to "down": redispubsub: subscription not confirmed
// by Redis in time: "down" after 2s`.)
func TestEventTarget_SubscribeErrorsNameTheTopicOnce(t *testing.T) {
	verifyNoLeakAtCleanup(t)
	srv := redistest.Start(t)
	srv.Kill()
	target, sub := newRedisEventTarget(t, srv.NewClient(t), "app:", func(c *redispubsub.SubscriberConfig) {
		c.SubscribeTimeout = time.Second
		c.ReconnectBackoffMin, c.ReconnectBackoffMax = 10*time.Millisecond, 10*time.Millisecond
	})
	noop := func(context.Context, redispubsub.Event[testPayload]) {}

	_, err := target.AddEventListener(context.Background(), "down", noop)
	require.ErrorIs(t, err, redispubsub.ErrSubscribeTimeout)
	assert.Equal(t, fmt.Sprintf(`redispubsub: subscription not confirmed by Redis in time: "down" after 1s `+
		`(last connection attempt: dial tcp %s: connect: connection refused)`, srv.Addr()), err.Error())

	// An error that does not name the topic gets it, with one "redispubsub:".
	require.NoError(t, sub.Close())
	_, err = target.AddEventListener(context.Background(), "down", noop)
	require.ErrorIs(t, err, redispubsub.ErrSubscriberClosed)
	assert.Equal(t, `redispubsub: subscribe to "down": subscriber closed`, err.Error())
}

// TestEventTarget_ACLRefusesAType: for an ACL user whose channels are those
// of some event types, AddEventListener of another type fails at once with
// an error wrapping ErrSubscriptionRefused that names the channel and
// carries Redis's NOPERM, while the allowed types keep their events; a
// refused type is not remembered, and DispatchEvent of it fails too.
func TestEventTarget_ACLRefusesAType(t *testing.T) {
	verifyNoLeakAtCleanup(t)
	srv := redistest.Start(t)
	// What issue 10's least-privilege user may do, on the channels of the
	// call.* event types under its prefix myapp:events: only.
	srv.Do(t, "ACL", "SETUSER", "app", "reset", "on", ">secret", "resetchannels", "&myapp:events:call.*",
		"+publish", "+subscribe", "+psubscribe", "+ssubscribe", "+spublish",
		"+unsubscribe", "+punsubscribe", "+sunsubscribe", "+ping")
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "app", Password: "secret"})
	t.Cleanup(func() { _ = client.Close() })
	target, sub := newRedisEventTarget(t, client, "myapp:events:", func(c *redispubsub.SubscriberConfig) {
		c.SubscribeTimeout = time.Hour // "at once": the refusal is not a timeout
	})
	ctx, cancel := context.WithTimeout(context.Background(), eventTargetTestTimeout)
	defer cancel()

	got := make(chan int, 4)
	_, err := target.AddEventListener(ctx, "call.responded:1", func(_ context.Context, ev redispubsub.Event[testPayload]) {
		got <- ev.Payload.Seq
	})
	require.NoError(t, err)
	dispatchAndReceive := func(seq int) {
		t.Helper()
		require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[testPayload]{Type: "call.responded", ID: "1", Payload: testPayload{Seq: seq}}))
		select {
		case s := <-got:
			require.Equal(t, seq, s)
		case <-ctx.Done():
			t.Fatal("no event on the allowed type")
		}
	}
	dispatchAndReceive(1)

	noop := func(context.Context, redispubsub.Event[testPayload]) {}
	for range 2 { // refused every time: nothing of the first attempt is left
		h, err := target.AddEventListener(ctx, "billing.charged", noop)
		require.ErrorIs(t, err, redispubsub.ErrSubscriptionRefused)
		assert.Nil(t, h)
		msg := err.Error()
		assert.Contains(t, msg, `"myapp:events:billing.charged"`)
		assert.Contains(t, msg, "NOPERM")
		assert.Equal(t, 1, strings.Count(msg, "redispubsub:"), "said once: %s", msg)
		assert.Equal(t, 1, strings.Count(msg, `billing.charged"`), "topic named once: %s", msg)
	}
	dispatchAndReceive(2)

	err = target.DispatchEvent(ctx, redispubsub.Event[testPayload]{Type: "billing.charged", Payload: testPayload{Seq: 3}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NOPERM")
	dispatchAndReceive(4)
	assert.Zero(t, sub.Stats().Reconnects, "a refused channel does not cost the others a reconnect")
}
