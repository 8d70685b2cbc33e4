package tests

// The EventTarget bridge on real brokers: the semantic suite of
// internal/eventtargettest on this adapter (Redis Pub/Sub) and on
// watermill-redisstream (Redis Streams, durable), what each does with events
// dispatched while a topic has no listener, and a Watermill router and an
// EventTarget working on the same events. gochannel runs the suite in the
// root package. Helpers here start with "bridge".
//
// None of these tests is parallel: the suite's check that Close leaves no
// goroutine looks at every goroutine of the process.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/eventtargettest"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// bridgePrefix is the channel prefix of the Redis Pub/Sub bridge tests, so
// that PUBSUB NUMSUB is asked about the channel Redis really has.
const bridgePrefix = "bridge:events:"

// bridgeServers remembers which server each subtest's Subscriber runs on, for
// Capabilities.BrokerSubscriptions, which only gets the Subscriber.
type bridgeServers struct {
	mu  sync.Mutex
	srv map[message.Subscriber]*redistest.Server
}

func (b *bridgeServers) put(t *testing.T, sub message.Subscriber, srv *redistest.Server) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		b.srv = make(map[message.Subscriber]*redistest.Server)
	}
	b.srv[sub] = srv
	t.Cleanup(func() {
		b.mu.Lock()
		delete(b.srv, sub)
		b.mu.Unlock()
	})
}

func (b *bridgeServers) get(t *testing.T, sub message.Subscriber) *redistest.Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	srv, ok := b.srv[sub]
	require.True(t, ok, "no server known for this Subscriber")
	return srv
}

// bridgeRedisPubSub returns this adapter's Publisher and Subscriber on srv,
// with ChannelPrefix prefix and a client each, closed at the end of the test.
func bridgeRedisPubSub(t *testing.T, srv *redistest.Server, prefix string) (*redispubsub.Publisher, *redispubsub.Subscriber) {
	t.Helper()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client: srv.NewClient(t), ChannelPrefix: prefix,
	}, nil)
	require.NoError(t, err)
	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{
		Client: srv.NewClient(t), ChannelPrefix: prefix,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, sub.Close())
		assert.NoError(t, pub.Close())
	})
	return pub, sub
}

func TestBridge_RedisPubSub(t *testing.T) {
	var servers bridgeServers
	eventtargettest.Run(t, func(t *testing.T) (message.Publisher, message.Subscriber) {
		srv := redistest.Start(t)
		pub, sub := bridgeRedisPubSub(t, srv, bridgePrefix)
		servers.put(t, sub, srv)
		return pub, sub
	}, eventtargettest.Capabilities{
		LiveOnSubscribe: true, // Subscribe returns once Redis confirmed the SUBSCRIBE
		BrokerSubscriptions: func(t *testing.T, sub message.Subscriber, topic string) int {
			return int(testutil.Numsub(t, servers.get(t, sub), bridgePrefix+topic))
		},
		Timeout: testutil.Timeout,
	})
}

// bridgeStreamGroup is the consumer group of the redisstream bridge tests.
const bridgeStreamGroup = "bridge"

// bridgeRedisStream returns a watermill-redisstream Publisher and Subscriber
// on srv, closed at the end of the test. The Subscriber reads in the consumer
// group bridgeStreamGroup:
//
//   - Subscribe creates the group (XGROUP CREATE ... MKSTREAM) before it
//     returns, so an event added to the stream after it returned is read by
//     the group: the EventTarget's "dispatched right after AddEventListener
//     is received" holds. Without a group (fan-out mode) the Subscriber starts
//     its XREAD from "$" in a goroutine after Subscribe returned, and an event
//     added before that XREAD reaches Redis is never read: not live.
//   - The group keeps its position when the last listener of a topic is
//     removed, so events dispatched meanwhile are delivered to the next
//     listener: the durable semantics users pick redisstream for.
//
// OldestId "0" makes a new group start at the beginning of its stream (the
// redisstream default). configure, when not nil, adjusts the Subscriber's
// config. Both redisstream types close the client they are given, so each
// gets its own.
func bridgeRedisStream(t *testing.T, srv *redistest.Server, configure func(*redisstream.SubscriberConfig)) (*redisstream.Publisher, *redisstream.Subscriber) {
	t.Helper()
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{
		Client: redis.NewClient(&redis.Options{Addr: srv.Addr()}),
	}, nil)
	require.NoError(t, err)
	config := redisstream.SubscriberConfig{
		Client:        redis.NewClient(&redis.Options{Addr: srv.Addr()}),
		ConsumerGroup: bridgeStreamGroup,
		OldestId:      "0",
		// Without these the first XREADGROUP blocks until a message comes,
		// and a cancelled subscription's reader lingers until Close.
		DisableIndefiniteInitialBlock: true,
		BlockTime:                     50 * time.Millisecond,
	}
	if configure != nil {
		configure(&config)
	}
	sub, err := redisstream.NewSubscriber(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, sub.Close())
		assert.NoError(t, pub.Close())
	})
	return pub, sub
}

func TestBridge_RedisStream(t *testing.T) {
	eventtargettest.Run(t, func(t *testing.T) (message.Publisher, message.Subscriber) {
		return bridgeRedisStream(t, redistest.Start(t), nil)
	}, eventtargettest.Capabilities{
		LiveOnSubscribe: true, // with a consumer group, see bridgeRedisStream
		// Not applicable: a stream has no subscription count. Consumers stay
		// in the group (XINFO CONSUMERS) after their reader stops, and
		// readers poll with XREADGROUP BLOCK rather than hold a
		// subscription. The suite still counts the EventTarget's live
		// Subscribe calls.
		BrokerSubscriptions: nil,
		Timeout:             testutil.Timeout,
	})
}

// TestBridge_RedisStreamFanOut runs the suite on redisstream without a
// consumer group (every Subscriber reads the whole stream, from "$"). Its
// Subscribe returns before its first XREAD reached Redis, so an event
// dispatched right after AddEventListener may be missed: the suite skips,
// saying so, the subtests that dispatch.
func TestBridge_RedisStreamFanOut(t *testing.T) {
	eventtargettest.Run(t, func(t *testing.T) (message.Publisher, message.Subscriber) {
		return bridgeRedisStream(t, redistest.Start(t), func(c *redisstream.SubscriberConfig) {
			c.ConsumerGroup = ""
		})
	}, eventtargettest.Capabilities{
		LiveOnSubscribe: false,
		Timeout:         testutil.Timeout,
	})
}

type bridgeEvent struct {
	Seq int `json:"seq"`
}

// bridgeRecorder is a listener that records the events it gets.
type bridgeRecorder chan redispubsub.Event[bridgeEvent]

func (r bridgeRecorder) listen(_ context.Context, ev redispubsub.Event[bridgeEvent]) { r <- ev }

// seqs receives n events and returns their sequence numbers.
func (r bridgeRecorder) seqs(t *testing.T, n int) []int {
	t.Helper()
	got := make([]int, 0, n)
	for range n {
		got = append(got, testutil.Wait(t, r, fmt.Sprintf("event %d of %d (got %v)", len(got)+1, n, got)).Payload.Seq)
	}
	return got
}

// bridgeTarget returns an EventTarget on pub and sub, closed at the end of
// the test (before pub and sub, which were made before it), whose error
// hook fails the test.
func bridgeTarget[T any](t *testing.T, pub message.Publisher, sub message.Subscriber) *redispubsub.EventTarget[T] {
	t.Helper()
	target, err := redispubsub.NewEventTarget[T](pub, sub,
		redispubsub.WithErrorHandler(func(topic string, err error) {
			t.Errorf("event target error on %q: %v", topic, err)
		}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Close() })
	return target
}

// The same steps on both brokers: a listener comes and goes, three events are
// dispatched while the topic has no listener, a listener comes back and a
// marker is dispatched. What the new listener gets is the difference between
// the two.

func TestBridge_RedisPubSub_EventsWithoutListenerAreLost(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := bridgeRedisPubSub(t, srv, bridgePrefix)
	target := bridgeTarget[bridgeEvent](t, pub, sub)
	ctx := testutil.Context(t)
	const typ = "bridge.gap"

	first := make(bridgeRecorder, 16)
	h, err := target.AddEventListener(ctx, typ, first.listen)
	require.NoError(t, err)
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[bridgeEvent]{Type: typ, Payload: bridgeEvent{Seq: 0}}))
	require.Equal(t, []int{0}, first.seqs(t, 1))
	h.Remove()
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, srv, bridgePrefix+typ) == 0 }, "UNSUBSCRIBE after the last listener")

	for seq := 1; seq <= 3; seq++ {
		require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[bridgeEvent]{Type: typ, Payload: bridgeEvent{Seq: seq}}))
	}
	assert.EqualValues(t, 3, pub.Stats().NoSubscribers, "Redis delivered them to nobody, and the Publisher counts them")

	again := make(bridgeRecorder, 16)
	_, err = target.AddEventListener(ctx, typ, again.listen)
	require.NoError(t, err)
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[bridgeEvent]{Type: typ, Payload: bridgeEvent{Seq: 4}}))
	require.Equal(t, []int{4}, again.seqs(t, 1), "Redis Pub/Sub keeps nothing for a topic without listeners")
	assert.Zero(t, sub.Stats().Gaps, "not a gap: the Subscriber was not subscribed to the topic")
}

func TestBridge_RedisStream_EventsWithoutListenerAreKept(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := bridgeRedisStream(t, srv, func(c *redisstream.SubscriberConfig) {
		// Two things leave an event pending in the group when a topic's
		// last listener goes, and redisstream hands a pending event to a
		// live consumer only once it has been idle for MaxIdleTime (60 s by
		// default; short here):
		//  - the reader whose subscription just ended may still take an
		//    event from the group (its XREADGROUP was already blocked in
		//    Redis) and never deliver it;
		//  - redisstream sends the XACK of an Acked message with the
		//    subscription's context (and may see the context's end before
		//    the Ack): an XACK not sent yet when the subscription ends is
		//    never sent, and that event, Acked by the EventTarget right
		//    before the removal, is delivered again (at-least-once).
		c.MaxIdleTime = 200 * time.Millisecond
		c.ClaimInterval = 50 * time.Millisecond
	})
	target := bridgeTarget[bridgeEvent](t, pub, sub)
	ctx := testutil.Context(t)
	const typ = "bridge.gap"

	// Before any listener: the group does not exist yet; OldestId "0" makes
	// the first listener's group start at the beginning of the stream.
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[bridgeEvent]{Type: typ, Payload: bridgeEvent{Seq: -1}}))

	first := make(bridgeRecorder, 16)
	h, err := target.AddEventListener(ctx, typ, first.listen)
	require.NoError(t, err)
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[bridgeEvent]{Type: typ, Payload: bridgeEvent{Seq: 0}}))
	require.Equal(t, []int{-1, 0}, first.seqs(t, 2))
	h.Remove()

	for seq := 1; seq <= 3; seq++ {
		require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[bridgeEvent]{Type: typ, Payload: bridgeEvent{Seq: seq}}))
	}

	again := make(bridgeRecorder, 16)
	_, err = target.AddEventListener(ctx, typ, again.listen)
	require.NoError(t, err)
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[bridgeEvent]{Type: typ, Payload: bridgeEvent{Seq: 4}}))
	// Every event dispatched while the topic had no listener arrives, once.
	// Not necessarily in order, and maybe after a redelivery of event 0:
	// see the MaxIdleTime comment above.
	var got []int
	seen := map[int]int{}
	for seen[1] == 0 || seen[2] == 0 || seen[3] == 0 || seen[4] == 0 {
		seq := again.seqs(t, 1)[0]
		got = append(got, seq)
		seen[seq]++
	}
	t.Logf("events received by the listener added back: %v", got)
	for seq, n := range seen {
		switch {
		case seq >= 1 && seq <= 4:
			assert.Equal(t, 1, n, "event %d received %d times (all: %v)", seq, n, got)
		case seq == 0:
			// Redelivered: its XACK was cut off by the end of its
			// subscription (at-least-once).
		default:
			t.Errorf("unexpected event %d (all: %v)", seq, got)
		}
	}
	select {
	case ev := <-first:
		t.Fatalf("removed listener got event %d", ev.Payload.Seq)
	default:
	}
}

// An order, as dispatched through the EventTarget and handled by the router.
type bridgeOrder struct {
	ID   string `json:"id"`
	Item string `json:"item"`
}

// A confirmation, as published by the router and received by the
// EventTarget.
type bridgeConfirmation struct {
	OrderID  string `json:"order_id"`
	Attempts int    `json:"attempts"`
}

// TestBridge_RouterAndEventTargetShareEvents runs a Watermill router (with
// Retry middleware) and EventTargets over the same Redis channels: events
// dispatched through an EventTarget are handled by a router handler and, in
// the same delivery, by an EventTarget listener; what the handler publishes
// on "order.confirmed:<id>" reaches the EventTarget's listeners of that id.
func TestBridge_RouterAndEventTargetShareEvents(t *testing.T) {
	srv := redistest.Start(t)
	const prefix = "bridge:router:"
	// The router closes the Subscribers of its handlers when it stops: it
	// gets its own Publisher and Subscriber, the EventTargets theirs.
	routerPub, routerSub := bridgeRedisPubSub(t, srv, prefix)
	pub, sub := bridgeRedisPubSub(t, srv, prefix)
	orders := bridgeTarget[bridgeOrder](t, pub, sub)
	confirmations := bridgeTarget[bridgeConfirmation](t, pub, sub)
	ctx := testutil.Context(t)

	type handled struct {
		uuid, correlation string
		order             bridgeOrder
		attempt           int
	}
	handledCh := make(chan handled, 16)
	attempts := map[string]int{} // the Subscriber hands the handler one message at a time

	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: testutil.Timeout}, watermill.NopLogger{})
	require.NoError(t, err)
	router.AddMiddleware(middleware.Retry{MaxRetries: 2, InitialInterval: time.Millisecond}.Middleware)
	router.AddConsumerHandler("confirm-orders", "order.placed", routerSub, func(msg *message.Message) error {
		var o bridgeOrder
		if err := json.Unmarshal(msg.Payload, &o); err != nil {
			return err
		}
		attempts[o.ID]++
		handledCh <- handled{msg.UUID, msg.Metadata.Get("correlation_id"), o, attempts[o.ID]}
		if o.ID == "o-2" && attempts[o.ID] == 1 {
			return errors.New("payment service timed out") // Retry handles it again
		}
		topic, err := redispubsub.Topic("order.confirmed", o.ID)
		if err != nil {
			return err
		}
		payload, err := json.Marshal(bridgeConfirmation{OrderID: o.ID, Attempts: attempts[o.ID]})
		if err != nil {
			return err
		}
		out := message.NewMessage(watermill.NewUUID(), payload)
		out.Metadata.Set("correlation_id", msg.Metadata.Get("correlation_id"))
		out.SetContext(msg.Context())
		return routerPub.Publish(topic, out)
	})
	routerCtx, stopRouter := context.WithCancel(context.Background())
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	defer func() {
		stopRouter()
		assert.NoError(t, testutil.Wait(t, routerDone, "the router to stop"))
	}()
	select {
	case <-router.Running(): // its Subscribe returned: Redis confirmed the subscription
	case err := <-routerDone:
		t.Fatalf("router stopped: %v", err)
	case <-time.After(testutil.Timeout):
		t.Fatal("router not running")
	}

	ids := []string{"o-1", "o-2", "o-3"}
	placed := make(chan redispubsub.Event[bridgeOrder], 16)
	_, err = orders.AddEventListener(ctx, "order.placed", func(_ context.Context, ev redispubsub.Event[bridgeOrder]) { placed <- ev })
	require.NoError(t, err)
	confirmed := map[string]chan redispubsub.Event[bridgeConfirmation]{}
	for _, id := range ids {
		ch := make(chan redispubsub.Event[bridgeConfirmation], 16)
		confirmed[id] = ch
		_, err := confirmations.AddEventListener(ctx, "order.confirmed:"+id,
			func(_ context.Context, ev redispubsub.Event[bridgeConfirmation]) { ch <- ev })
		require.NoError(t, err)
	}

	for _, id := range ids {
		meta := message.NewMessage("", nil)
		meta.Metadata.Set("correlation_id", "corr-"+id)
		require.NoError(t, orders.DispatchEvent(ctx, redispubsub.Event[bridgeOrder]{
			Type: "order.placed", Payload: bridgeOrder{ID: id, Item: "item of " + id}, Message: meta,
		}))
	}

	uuids := map[string]string{} // order id → message UUID the router saw
	var handledAll []handled
	for range len(ids) + 1 { // o-2 twice
		h := testutil.Wait(t, handledCh, fmt.Sprintf("the router's delivery %d of %d (after %+v)", len(handledAll)+1, len(ids)+1, handledAll))
		handledAll = append(handledAll, h)
		assert.Equal(t, "corr-"+h.order.ID, h.correlation, "metadata of the dispatched event reaches the handler")
		assert.Equal(t, "item of "+h.order.ID, h.order.Item)
		if prev, ok := uuids[h.order.ID]; ok {
			assert.Equal(t, prev, h.uuid, "Retry handles the same message again")
		}
		uuids[h.order.ID] = h.uuid
	}
	for _, id := range ids {
		ev := testutil.Wait(t, placed, "the EventTarget listener's order "+id)
		assert.Equal(t, "order.placed", ev.Type)
		assert.Empty(t, ev.ID)
		assert.Equal(t, id, ev.Payload.ID, "listener gets the events in dispatch order")
		assert.Equal(t, uuids[id], ev.Message.UUID, "the router and the listener got the same event")
		conf := testutil.Wait(t, confirmed[id], "the confirmation of "+id+" at the EventTarget")
		assert.Equal(t, "order.confirmed", conf.Type)
		assert.Equal(t, id, conf.ID)
		wantAttempts := 1
		if id == "o-2" {
			wantAttempts = 2
		}
		assert.Equal(t, bridgeConfirmation{OrderID: id, Attempts: wantAttempts}, conf.Payload)
		assert.Equal(t, "corr-"+id, conf.Message.Metadata.Get("correlation_id"))
	}
	for id, ch := range confirmed {
		select {
		case ev := <-ch:
			t.Fatalf("second confirmation of %s: %+v", id, ev.Payload)
		default:
		}
	}
	assert.Zero(t, routerPub.Stats().NoSubscribers, "every confirmation had a listener")
	stats := sub.Stats()
	assert.Zero(t, stats.DecodeFailures+stats.Dropped+stats.Gaps, "%+v", stats)
}
