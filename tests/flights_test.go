package tests

// SubscriberConfig.MaxInFlight and OrderingKey (issue 18) on a real server:
// a Watermill router with Retry, under retries and Nacks, keeps each key's
// order while the keys run concurrently; a subscription ended by Close or
// by its context with messages in flight leaves nothing behind;
// SubscribeInitialize and sharded mode hand out several messages at once;
// and Watermill's universal suite runs again with MaxInFlight 16. Helpers
// are prefixed fl.

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// flEntityKey is the ordering key of an envelope's id, all events of one
// entity in order: the id of the concrete topic that SubscribePattern
// puts in MetadataTopic ("order.updated:k3" gives "k3").
func flEntityKey(msg *message.Message) string {
	_, id := redispubsub.SplitTopic(msg.Metadata.Get(redispubsub.MetadataTopic))
	return id
}

// flPatternSubscriber gives a router's handler a pattern of topics: its
// Subscribe is the Subscriber's SubscribePattern.
type flPatternSubscriber struct{ *redispubsub.Subscriber }

func (s flPatternSubscriber) Subscribe(ctx context.Context, pattern string) (<-chan *message.Message, error) {
	return s.SubscribePattern(ctx, pattern)
}

// A router with Retry on the events of 8 entities (SubscribePattern of
// "order.updated:*"), MaxInFlight 16 and the entity id as the ordering
// key. Some messages fail their first attempt (Retry calls the handler
// again), some fail every attempt of their first delivery (the router
// Nacks them and the Subscriber delivers them again). Per key the handler
// sees the messages in publish order, one at a time, each attempt of a
// retried or redelivered message before the next message of its key; every
// message is attempted exactly as often as planned and handled once; and
// the keys run concurrently: the first messages of all 8 are in the handler
// at once (each waits for the others, bounded by testutil.Timeout).
func TestFlights_RouterKeepsEachKeysOrderUnderRetryAndNack(t *testing.T) {
	const (
		keys       = 8
		perKey     = 25
		maxRetries = 2
		total      = keys * perKey
	)
	// nacked: every attempt of the first delivery fails; failsOnce: the
	// first attempt fails and Retry's second succeeds.
	nacked := func(seq int) bool { return seq%6 == 3 }
	failsOnce := func(seq int) bool { return seq%4 == 1 && !nacked(seq) }
	attemptsOf := func(seq int) int {
		switch {
		case nacked(seq):
			return maxRetries + 2 // the first delivery's, and the second's
		case failsOnce(seq):
			return 2
		}
		return 1
	}
	var want, wantHandled []int // the seq of every attempt and success, per key, in order
	nacks := 0
	for seq := range perKey {
		wantHandled = append(wantHandled, seq)
		for range attemptsOf(seq) {
			want = append(want, seq)
		}
		if nacked(seq) {
			nacks += keys
		}
	}

	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) {
		c.MaxInFlight = 16
		c.OrderingKey = flEntityKey
	})

	var (
		running, maxRunning atomic.Int64
		allKeysIn           = make(chan struct{})
		allKeysOnce         sync.Once
		notAllKeysIn        atomic.Bool
		allHandled          = make(chan struct{})

		mu         sync.Mutex
		attempts   = map[string][]int{} // by key: the seq of every attempt, in order
		handled    = map[string][]int{} // by key: the seq of every success, in order
		calls      = map[string]int{}   // by message UUID
		inKey      = map[string]int{}   // by key: handler calls running
		keyOverlap []string             // keys that had two calls at once
		successes  int
	)
	handler := func(msg *message.Message) error {
		now := running.Add(1)
		defer running.Add(-1)
		for m := maxRunning.Load(); now > m && !maxRunning.CompareAndSwap(m, now); m = maxRunning.Load() {
		}
		key := flEntityKey(msg)
		var body struct{ Seq int }
		if err := json.Unmarshal(msg.Payload, &body); err != nil {
			t.Errorf("payload %q: %v", msg.Payload, err)
			return nil
		}
		seq := body.Seq

		mu.Lock()
		if inKey[key]++; inKey[key] > 1 {
			keyOverlap = append(keyOverlap, fmt.Sprintf("%s:%d", key, seq))
		}
		calls[msg.UUID]++
		call := calls[msg.UUID]
		attempts[key] = append(attempts[key], seq)
		mu.Unlock()
		defer func() {
			mu.Lock()
			inKey[key]--
			mu.Unlock()
		}()

		if seq == 0 {
			// Only first messages run until all are in: the next of a key
			// waits for its first one's Ack.
			if now >= keys {
				allKeysOnce.Do(func() { close(allKeysIn) })
			}
			select {
			case <-allKeysIn:
			case <-time.After(testutil.Timeout):
				notAllKeysIn.Store(true)
			}
		}
		switch {
		case nacked(seq) && call <= maxRetries+1:
			return fmt.Errorf("%s:%d fails every attempt of its first delivery", key, seq)
		case failsOnce(seq) && call == 1:
			return fmt.Errorf("%s:%d fails its first attempt", key, seq)
		}
		mu.Lock()
		handled[key] = append(handled[key], seq)
		if successes++; successes == total {
			close(allHandled)
		}
		mu.Unlock()
		return nil
	}

	r := wmNewRouter(t)
	r.AddMiddleware(middleware.Retry{MaxRetries: maxRetries, InitialInterval: time.Millisecond}.Middleware)
	r.AddConsumerHandler("orders", "order.updated:*", flPatternSubscriber{sub}, handler)
	wmRunRouter(t, r)

	for seq := range perKey {
		for k := range keys {
			topic, err := redispubsub.Topic("order.updated", "k"+strconv.Itoa(k))
			require.NoError(t, err)
			require.NoError(t, pub.Publish(topic, wmJSON(`{"seq":%d}`, seq)))
		}
	}
	testutil.Wait(t, allHandled, "every message to be handled")
	testutil.Eventually(t, func() bool { return sub.Stats().Acked == total }, "every message Acked")
	testutil.Eventually(t, func() bool { return sub.Stats().BufferedBytes == 0 }, "the budget holds nothing")

	mu.Lock()
	defer mu.Unlock()
	assert.False(t, notAllKeysIn.Load(), "the first messages of the %d keys were not in the handler at once", keys)
	assert.GreaterOrEqual(t, maxRunning.Load(), int64(keys), "handler calls at once")
	assert.Empty(t, keyOverlap, "two handler calls of one key at once")
	for k := range keys {
		key := "k" + strconv.Itoa(k)
		assert.Equal(t, want, attempts[key], "key %s: the attempts, in order", key)
		assert.Equal(t, wantHandled, handled[key], "key %s: handled once each, in publish order", key)
	}
	stats := sub.Stats()
	t.Logf("at most %d handler calls at once; subscriber stats %+v", maxRunning.Load(), stats)
	assert.EqualValues(t, total, stats.Received)
	assert.EqualValues(t, total, stats.Acked)
	assert.EqualValues(t, nacks, stats.Nacked)
	assert.EqualValues(t, total+nacks, stats.Delivered, "the Nacked messages twice, the retried ones once")
	assert.Zero(t, stats.Dropped)
	assert.Zero(t, stats.Discarded)
}

// Close with MaxInFlight messages in flight and more queued: see
// flEndWithMessagesInFlight.
func TestFlights_CloseWithMessagesInFlight(t *testing.T) {
	flEndWithMessagesInFlight(t, true)
}

// Cancelling the Subscribe context with MaxInFlight messages in flight and
// more queued: see flEndWithMessagesInFlight.
func TestFlights_CancelWithMessagesInFlight(t *testing.T) {
	flEndWithMessagesInFlight(t, false)
}

// flEndWithMessagesInFlight receives MaxInFlight (16) messages of a
// subscription without answering them, while 24 more wait, then ends it by
// Close (closeSubscriber) or by cancelling its context: the contexts of the
// messages in flight end, the output channel closes without handing out
// another message, all 40 are counted as discarded, the budget holds
// nothing, the goroutines are back to what they were before the Subscribe
// (Close) or after it (cancel; Redis then has no subscriber left), and
// none is left at the end of the test (goleak).
func flEndWithMessagesInFlight(t *testing.T, closeSubscriber bool) {
	const maxInFlight, published = 16, 40
	leaks := goleak.IgnoreCurrent()
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })

	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) { c.MaxInFlight = maxInFlight })
	require.NoError(t, pub.Publish("warm-up", wmJSON(`{}`))) // the Publisher's connection is there before the count
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, "jobs")
	require.NoError(t, err)
	subscribed := runtime.NumGoroutine()
	// A marker on another channel of the same connection, published after
	// the messages: once it arrived, every one of them was routed
	// (Received counts a message before it is).
	markerCtx, endMarker := context.WithCancel(context.Background())
	markerCh, err := sub.Subscribe(markerCtx, "marker")
	require.NoError(t, err)

	msgs := make(message.Messages, published)
	for i := range msgs {
		msgs[i] = wmJSON(`{"n":%d}`, i)
	}
	require.NoError(t, pub.Publish("jobs", msgs...))
	require.NoError(t, pub.Publish("marker", wmJSON(`{}`)))
	held := make(message.Messages, maxInFlight)
	for i := range held {
		held[i] = testutil.Receive(t, ch)
	}
	testutil.Receive(t, markerCh).Ack()
	testutil.Eventually(t, func() bool {
		stats := sub.Stats()
		return stats.Acked == 1 && stats.Delivered >= maxInFlight+1 // counted after the send
	}, "MaxInFlight handed out, the marker answered")
	endMarker()
	testutil.RequireClosed(t, markerCh)
	stats := sub.Stats()
	require.EqualValues(t, published+1, stats.Received)
	require.EqualValues(t, maxInFlight+1, stats.Delivered, "MaxInFlight messages out, none answered (and the marker)")
	require.Positive(t, stats.BufferedBytes, "the messages in flight and waiting are held")
	for _, msg := range held {
		require.NoError(t, msg.Context().Err())
	}

	if closeSubscriber {
		require.NoError(t, sub.Close())
	} else {
		cancel()
	}
	for _, msg := range held {
		testutil.Wait(t, msg.Context().Done(), "the context of a message in flight to end")
	}
	var extra []string
	timeout := time.After(testutil.Timeout)
	for open := true; open; {
		select {
		case msg, ok := <-ch:
			if open = ok; ok {
				extra = append(extra, msg.UUID)
				msg.Nack()
			}
		case <-timeout:
			t.Fatalf("output channel not closed within %v", testutil.Timeout)
		}
	}
	assert.Empty(t, extra, "messages handed out after the subscription ended")
	stats = sub.Stats()
	assert.Zero(t, stats.BufferedBytes, "the budget holds nothing")
	assert.EqualValues(t, published, stats.Discarded, "the messages in flight and those waiting")
	assert.EqualValues(t, 1, stats.Acked, "the marker")
	assert.Zero(t, stats.Nacked)
	if closeSubscriber {
		testutil.GoroutinesAtMost(t, before)
	} else {
		testutil.GoroutinesAtMost(t, subscribed)
		testutil.Eventually(t, func() bool { return testutil.Numsub(t, srv, "jobs") == 0 }, "Redis has no subscriber left")
	}
}

// flRequireInFlight receives n messages of ch without answering any (so
// they are in flight at once), then Acks them, and reads the rest of
// published: every message arrives once. It returns the first n.
func flRequireInFlight(t *testing.T, ch <-chan *message.Message, published message.Messages, n int) message.Messages {
	t.Helper()
	held := make(message.Messages, n)
	for i := range held {
		held[i] = testutil.Receive(t, ch)
	}
	for _, msg := range held {
		require.NoError(t, msg.Context().Err(), "a message in flight whose context ended")
	}
	for _, msg := range held {
		msg.Ack()
	}
	rest := wmReadAll(t, ch, len(published)-n)
	tests.AssertAllMessagesReceived(t, published, append(slices.Clone(held), rest...))
	return held
}

// SubscribeInitialize with MaxInFlight 16: the messages it held for the
// first Subscribe go out 16 at once, before any Ack.
func TestFlights_SubscribeInitialize(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) { c.MaxInFlight = 16 })
	require.NoError(t, sub.SubscribeInitialize("held"))
	msgs := make(message.Messages, 20)
	for i := range msgs {
		msgs[i] = wmJSON(`{"n":%d}`, i)
	}
	require.NoError(t, pub.Publish("held", msgs...))
	testutil.Eventually(t, func() bool { return sub.Stats().Received == 20 }, "the Subscriber holds the messages")

	ch, _ := testutil.Subscribe(t, sub, "held")
	flRequireInFlight(t, ch, msgs, 16)
	testutil.Eventually(t, func() bool { return sub.Stats().BufferedBytes == 0 }, "the budget holds nothing")
}

// Sharded mode on a cluster of 3 masters, MaxInFlight 16: two topics whose
// channels belong to different masters each have 16 messages out at once,
// 32 in all, before any Ack.
func TestFlights_Sharded(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: cluster.NewClient(t), Sharded: true}, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub := wmSubscriber(t, nil, func(c *redispubsub.SubscriberConfig) {
		c.Client = cluster.NewClient(t)
		c.Sharded = true
		c.MaxInFlight = 16
	})

	var topics []string
	owners := map[string]bool{}
	for i := 0; len(topics) < 2; i++ {
		topic := fmt.Sprintf("flights.%d", i)
		if owner := cluster.ChannelOwner(t, topic).Addr(); !owners[owner] {
			owners[owner] = true
			topics = append(topics, topic)
		}
	}
	chans := make([]<-chan *message.Message, len(topics))
	published := make([]message.Messages, len(topics))
	for i, topic := range topics {
		chans[i], _ = testutil.Subscribe(t, sub, topic)
		published[i] = make(message.Messages, 20)
		for j := range published[i] {
			published[i][j] = wmJSON(`{"n":%d}`, j)
		}
		require.NoError(t, pub.Publish(topic, published[i]...))
	}
	var held message.Messages
	for i := range topics {
		for range 16 {
			held = append(held, testutil.Receive(t, chans[i]))
		}
	}
	for _, msg := range held {
		require.NoError(t, msg.Context().Err(), "a message in flight whose context ended")
		msg.Ack()
	}
	for i := range topics {
		rest := wmReadAll(t, chans[i], 4)
		tests.AssertAllMessagesReceived(t, published[i], append(slices.Clone(held[16*i:16*(i+1)]), rest...))
	}
	testutil.Eventually(t, func() bool { return sub.Stats().BufferedBytes == 0 }, "the budget holds nothing")
}

// flUniversalFeatures are the adapter's features with MaxInFlight 16 and
// no OrderingKey: those of wmUniversalFeatures but the order.
var flUniversalFeatures = func() tests.Features {
	f := wmUniversalFeatures
	// Up to 16 messages of a subscription are out before their Acks, each
	// on a goroutine of its own: they reach the consumer in no particular
	// order. (TestPublishSubscribeInOrder and TestNoAck skip themselves.)
	f.GuaranteedOrder = false
	return f
}()

// TestUniversalMaxInFlight16 runs Watermill's universal suite as
// TestUniversal does, against Subscribers with MaxInFlight 16 and honest
// features (tests/README.md says which tests no longer apply, and why).
func TestUniversalMaxInFlight16(t *testing.T) {
	srv := redistest.Start(t)
	wmRunUniversal(t, wmUniversalConstructor(srv, func(c *redispubsub.SubscriberConfig) { c.MaxInFlight = 16 }), flUniversalFeatures)
}

// TestUniversalMaxInFlight16_InOrderByKey runs the universal
// TestPublishSubscribeInOrder, which skips itself without GuaranteedOrder,
// with MaxInFlight 16 and an OrderingKey of the message type it checks the
// order of (its payload, one of 16): the order per key is all it asks for.
// As in TestUniversal, with RequireSingleInstance.
func TestUniversalMaxInFlight16_InOrderByKey(t *testing.T) {
	srv := redistest.Start(t)
	constructor := wmUniversalConstructor(srv, func(c *redispubsub.SubscriberConfig) {
		c.MaxInFlight = 16
		c.OrderingKey = func(msg *message.Message) string { return string(msg.Payload) }
	})
	features := wmUniversalFeatures
	features.RequireSingleInstance = true
	testID := tests.NewTestID()
	t.Run(string(testID), func(t *testing.T) {
		tests.TestPublishSubscribeInOrder(t, tests.TestContext{TestID: testID, Features: features}, constructor)
	})
}

// TestFlightsHandOutInArrivalOrder: without an OrderingKey, messages in
// flight have no order among their answers, but they are handed out in the
// order they arrived: with a backlog of 100 and a consumer that Acks each
// at once, none comes after a later one. (Before, each flight was a
// goroutine of its own racing for the output channel, and Go's scheduler
// runs the newest goroutine next: messages were overtaken by 19, 65 and 85
// others, 3 runs of 3; in one the order was 15, 16, ..., 99, 0, ..., 14.
// The dispatcher now hands them out itself.)
func TestFlightsHandOutInArrivalOrder(t *testing.T) {
	const maxInFlight, n = 16, 100
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) { c.MaxInFlight = maxInFlight })
	require.NoError(t, sub.SubscribeInitialize("backlog"))
	msgs := make(message.Messages, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(strconv.Itoa(i), []byte("{}"))
	}
	require.NoError(t, pub.Publish("backlog", msgs...))
	testutil.Eventually(t, func() bool { return sub.Stats().Received == n }, "the backlog held")

	ch, _ := testutil.Subscribe(t, sub, "backlog")
	got := wmReadAll(t, ch, n) // Acks each at once
	for pos, msg := range got {
		i, err := strconv.Atoi(msg.UUID)
		require.NoError(t, err)
		require.Equal(t, pos, i, "hand-out order: %v", got.IDs())
	}
}
