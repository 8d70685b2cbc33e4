package redispubsub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

func TestSubscribeThenPublish10000NoneLost(t *testing.T) {
	f := newFixture(t, nil)
	ch, _ := testutil.Subscribe(t, f.sub, "orders")

	const n = 10_000
	publishN(t, f.pub, "orders", n, 100)

	for i := 0; i < n; i++ {
		msg := testutil.Receive(t, ch)
		require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i), string(msg.Payload), "message %d out of order", i)
		msg.Ack()
	}
	testutil.Eventually(t, func() bool { return f.sub.Stats().Acked == n })
	stats := f.sub.Stats()
	assert.EqualValues(t, n, stats.Received)
	assert.Zero(t, stats.Dropped)
	assert.Zero(t, f.pub.Stats().NoSubscribers)
}

func TestFanOutSharesOneRedisSubscription(t *testing.T) {
	f := newFixture(t, nil)
	var (
		chans   []<-chan *message.Message
		cancels []context.CancelFunc
	)
	for range 3 {
		ch, cancel := testutil.Subscribe(t, f.sub, "fanout")
		chans = append(chans, ch)
		cancels = append(cancels, cancel)
	}
	require.EqualValues(t, 1, testutil.Numsub(t, f.srv, "fanout"))

	const n = 50
	publishN(t, f.pub, "fanout", n, 10)
	testutil.Parallel(t, len(chans), len(chans), func(k int) error {
		for i := range n {
			msg, err := testutil.TryReceive(chans[k])
			if err != nil {
				return fmt.Errorf("subscription %d, message %d: %w", k, i, err)
			}
			assert.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i), string(msg.Payload))
			msg.Ack()
		}
		return nil
	})

	cancels[0]()
	cancels[1]()
	testutil.RequireClosed(t, chans[0])
	testutil.RequireClosed(t, chans[1])
	require.EqualValues(t, 1, testutil.Numsub(t, f.srv, "fanout"), "still one local subscription")
	cancels[2]()
	testutil.RequireClosed(t, chans[2])
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, f.srv, "fanout") == 0 }, "UNSUBSCRIBE after the last cancel")
}

func TestNackRedeliversSameMessage(t *testing.T) {
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) { c.NackResendSleep = time.Millisecond })
	ch, _ := testutil.Subscribe(t, f.sub, "nack")
	require.NoError(t, f.pub.Publish("nack", jsonMsg(1), jsonMsg(2)))

	first := testutil.Receive(t, ch)
	first.Nack()
	again := testutil.Receive(t, ch)
	require.Equal(t, first.UUID, again.UUID)
	require.Equal(t, string(first.Payload), string(again.Payload))
	again.Ack()
	second := testutil.Receive(t, ch)
	require.JSONEq(t, `{"n":2}`, string(second.Payload))
	second.Ack()

	testutil.Eventually(t, func() bool { return f.sub.Stats().Acked == 2 })
	require.EqualValues(t, 1, f.sub.Stats().Nacked)
}

func TestCancelClosesChannelWhileMessageWaitsForAck(t *testing.T) {
	f := newFixture(t, nil)
	ch, cancel := testutil.Subscribe(t, f.sub, "pending")
	require.NoError(t, f.pub.Publish("pending", jsonMsg(1), jsonMsg(2)))
	msg := testutil.Receive(t, ch) // never acked

	cancel()
	testutil.RequireClosed(t, ch)
	testutil.Wait(t, msg.Context().Done(), "the unacked message's context to end")
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, f.srv, "pending") == 0 })
}

func TestCloseWithNobodyReading(t *testing.T) {
	f := newFixture(t, nil)
	ch1, _ := testutil.Subscribe(t, f.sub, "a")
	ch2, _ := testutil.Subscribe(t, f.sub, "b")
	require.NoError(t, f.pub.Publish("a", jsonMsg(1), jsonMsg(2), jsonMsg(3)))
	require.NoError(t, f.pub.Publish("b", jsonMsg(1)))
	testutil.Eventually(t, func() bool { return f.sub.Stats().Received == 4 })

	closed := make(chan error, 1)
	go func() { closed <- f.sub.Close() }()
	require.NoError(t, testutil.Wait(t, closed, "Close while nobody reads"))
	testutil.RequireClosed(t, ch1)
	testutil.RequireClosed(t, ch2)
	require.NoError(t, f.sub.Close(), "Close is idempotent")
	_, err := f.sub.Subscribe(context.Background(), "a")
	require.ErrorIs(t, err, redispubsub.ErrSubscriberClosed)
}

// A subscription that never reads must not get the Subscriber disconnected
// by Redis's output buffer limit: the reader keeps reading and the overflow
// of its QueueSize cap is counted. (The default, a byte budget, has its own
// test: TestFaultStalledConsumerHeapBounded.)
func TestStalledConsumerIsNotDisconnected(t *testing.T) {
	const queue = 16
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) { c.QueueSize = queue },
		"--client-output-buffer-limit", "pubsub 2mb 1mb 5")
	_, _ = testutil.Subscribe(t, f.sub, "firehose")

	const (
		n    = 1000
		size = 100 << 10 // 100 KiB: 100 MB in all
	)
	payload, err := json.Marshal(strings.Repeat("x", size))
	require.NoError(t, err)
	for range n {
		require.NoError(t, f.pub.Publish("firehose", message.NewMessage(watermill.NewUUID(), payload)))
	}
	// One message waits in the output channel, queue more wait in the
	// queue: the rest is dropped. (Received counts a message before it is
	// routed, and dropped.)
	testutil.Eventually(t, func() bool { return f.sub.Stats().Dropped == n-queue-1 }, "every message read from the socket, the overflow dropped")

	stats := f.sub.Stats()
	assert.Zero(t, stats.Reconnects, "Redis disconnected the subscriber")
	assert.EqualValues(t, n, stats.Received)
	assert.EqualValues(t, 1, testutil.Numsub(t, f.srv, "firehose"))
}

func TestMalformedBodiesAreCountedAndSkipped(t *testing.T) {
	f := newFixture(t, nil)
	ch, _ := testutil.Subscribe(t, f.sub, "bad")
	admin := f.srv.NewClient(t)
	bodies := []string{
		"not json",
		`{"type":"bad","payload":{},"metadata":{"k":1}}`,
		`{"uuid":5}`,
		`[1,2,3]`,
		strings.Repeat("\x00garbage", 1<<17), // 1 MB
	}
	for _, body := range bodies {
		require.NoError(t, admin.Publish(context.Background(), "bad", body).Err())
	}
	require.NoError(t, f.pub.Publish("bad", jsonMsg(42)))

	msg := testutil.Receive(t, ch)
	require.JSONEq(t, `{"n":42}`, string(msg.Payload))
	msg.Ack()
	require.EqualValues(t, len(bodies), f.sub.Stats().DecodeFailures)
}

func TestSubscribeInitializeHoldsMessagesForFirstSubscribe(t *testing.T) {
	f := newFixture(t, nil)
	require.NoError(t, f.sub.SubscribeInitialize("early"))
	require.EqualValues(t, 1, testutil.Numsub(t, f.srv, "early"))
	publishN(t, f.pub, "early", 5, 5)
	testutil.Eventually(t, func() bool { return f.sub.Stats().Received == 5 })

	ch, cancel := testutil.Subscribe(t, f.sub, "early")
	for i := range 5 {
		msg := testutil.Receive(t, ch)
		require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i), string(msg.Payload))
		msg.Ack()
	}
	require.EqualValues(t, 1, testutil.Numsub(t, f.srv, "early"))
	cancel()
	testutil.RequireClosed(t, ch)
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, f.srv, "early") == 0 })
}

func TestSubscribePatternCarriesTopic(t *testing.T) {
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) { c.ChannelPrefix = "app*:" })
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{
		Client: f.srv.NewClient(t), ChannelPrefix: "app*:",
	}, nil)
	require.NoError(t, err)
	defer pub.Close()
	ch, err := f.sub.SubscribePattern(context.Background(), "call.*")
	require.NoError(t, err)

	// Published without the prefix: the escaped prefix must not match it.
	require.NoError(t, f.pub.Publish("app-x:call.other", jsonMsg(0)))
	require.NoError(t, pub.Publish("call.responded:uuid-1", jsonMsg(1)))
	require.NoError(t, pub.Publish("user.created", jsonMsg(2)))
	require.NoError(t, pub.Publish("call.started", jsonMsg(3)))

	for _, want := range []struct{ topic, payload string }{
		{"call.responded:uuid-1", `{"n":1}`},
		{"call.started", `{"n":3}`},
	} {
		msg := testutil.Receive(t, ch)
		assert.Equal(t, want.topic, msg.Metadata.Get(redispubsub.MetadataTopic))
		assert.JSONEq(t, want.payload, string(msg.Payload))
		msg.Ack()
	}
	require.NoError(t, f.sub.Close())
	testutil.RequireClosed(t, ch)
}

func TestResubscribesAfterServerRestart(t *testing.T) {
	reconnects := make(chan redispubsub.ReconnectEvent, 10)
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) {
		c.OnReconnect = func(ev redispubsub.ReconnectEvent) { reconnects <- ev }
	})
	ch, _ := testutil.Subscribe(t, f.sub, "survivor")
	pch, err := f.sub.SubscribePattern(context.Background(), "surv*")
	require.NoError(t, err)

	f.srv.Kill()
	f.srv.Restart()
	ev := testutil.Wait(t, reconnects, "OnReconnect")
	assert.Equal(t, 1, ev.Topics)
	assert.Equal(t, 1, ev.Patterns)
	assert.Error(t, ev.Cause)

	require.NoError(t, f.pub.Publish("survivor", jsonMsg(7)))
	msg := testutil.Receive(t, ch)
	require.JSONEq(t, `{"n":7}`, string(msg.Payload))
	msg.Ack()
	msg = testutil.Receive(t, pch)
	require.Equal(t, "survivor", msg.Metadata.Get(redispubsub.MetadataTopic))
	msg.Ack()
	require.EqualValues(t, 1, f.sub.Stats().Reconnects)
}

func TestSubscriberConfigValidate(t *testing.T) {
	_, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{}, nil)
	require.ErrorIs(t, err, redispubsub.ErrInvalidConfig)
	require.ErrorContains(t, err, "Client is required")
}

// Redis drops what it cannot deliver to a killed connection; the sequence
// stamps let the Subscriber count exactly that.
func TestGapsCountWhatRedisLost(t *testing.T) {
	var (
		mu      sync.Mutex
		gapSum  uint64
		resumed = make(chan struct{}, 1)
	)
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) {
		c.OnGap = func(ev redispubsub.GapEvent) {
			mu.Lock()
			gapSum += ev.Missing()
			mu.Unlock()
		}
		c.OnReconnect = func(redispubsub.ReconnectEvent) { resumed <- struct{}{} }
	})
	ch, _ := testutil.Subscribe(t, f.sub, "lossy")

	const n = 10_000
	published := make(chan error, 1)
	go func() { published <- publishNErr(f.pub, "lossy", n, 50) }()
	testutil.Eventually(t, func() bool { return f.sub.Stats().Received >= n/5 })
	require.EqualValues(t, 1, f.srv.KillClients(t, "TYPE", "pubsub"))
	require.NoError(t, testutil.Wait(t, published, "the publishing"))
	testutil.Wait(t, resumed, "OnReconnect")
	// A last message reveals a gap at the end of the stream, if any.
	require.NoError(t, f.pub.Publish("lossy", jsonMsg(n)))

	received := 0
	for {
		msg := testutil.Receive(t, ch)
		msg.Ack()
		received++
		if string(msg.Payload) == fmt.Sprintf(`{"n":%d}`, n) {
			break
		}
	}
	stats := f.sub.Stats()
	require.EqualValues(t, n+1, uint64(received)+stats.Gaps, "gaps = published - received")
	require.EqualValues(t, received, stats.Received)
	mu.Lock()
	require.Equal(t, stats.Gaps, gapSum, "OnGap reports every gap")
	mu.Unlock()
	t.Logf("published %d, received %d, gaps %d", n+1, received, stats.Gaps)
}

func TestStampsAreRemovedFromDeliveredMessages(t *testing.T) {
	f := newFixture(t, nil)
	ch, _ := testutil.Subscribe(t, f.sub, "clean")
	sent := jsonMsg(1)
	sent.Metadata.Set("k", "v")
	require.NoError(t, f.pub.Publish("clean", sent))
	msg := testutil.Receive(t, ch)
	msg.Ack()
	require.Equal(t, message.Metadata{"k": "v"}, msg.Metadata)
	require.Equal(t, message.Metadata{"k": "v"}, sent.Metadata, "Publish does not modify the message")
}

// A Subscribe made right after the topic's last subscription ended, before
// Redis confirmed its UNSUBSCRIBE, starts with its own SUBSCRIBE: it does not
// get what the ended subscription left unread on the connection.
func TestResubscribeDoesNotGetMessagesOfTheEndedSubscription(t *testing.T) {
	f := newFixture(t, nil)
	ch, cancel := testutil.Subscribe(t, f.sub, "again")
	msgs := make([]*message.Message, 2000)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(`"`+strings.Repeat("x", 1024)+`"`))
	}
	require.NoError(t, f.pub.Publish("again", msgs...))
	cancel()
	testutil.RequireClosed(t, ch)

	again, _ := testutil.Subscribe(t, f.sub, "again")
	marker := jsonMsg(1)
	require.NoError(t, f.pub.Publish("again", marker))
	msg := testutil.Receive(t, again)
	msg.Ack()
	require.Equal(t, marker.UUID, msg.UUID, "the first message is one published before Subscribe was called")
}

// A topic held by SubscribeInitialize whose resubscription Redis refuses
// later (the ACL no longer grants the channel: Redis disconnects the client
// and refuses the resubscription): the next Subscribe of the topic fails
// with ErrSubscriptionRefused, or its channel closes, and Close returns.
// (The bug: the held subscription had ended without a failure; Subscribe
// took it over and returned no error, its channel never closed, and Close
// waited for ever for it.)
func TestSubscribeOfAHeldTopicRefusedLaterFailsAndCloseReturns(t *testing.T) {
	reconnected := make(chan redispubsub.ReconnectEvent, 4)
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) {
		c.OnReconnect = func(ev redispubsub.ReconnectEvent) { reconnected <- ev }
	})
	require.NoError(t, f.sub.SubscribeInitialize("guarded"))
	f.srv.Do(t, "ACL", "SETUSER", "default", "resetchannels", "&open")
	require.Equal(t, 1, testutil.Wait(t, reconnected, "the reconnect").Refused)

	ch, err := f.sub.Subscribe(context.Background(), "guarded")
	if err == nil {
		testutil.RequireClosed(t, ch) // refused: the channel must at least close
	} else {
		require.ErrorIs(t, err, redispubsub.ErrSubscriptionRefused)
	}
	require.NoError(t, testutil.Close(t, f.sub, "the Subscriber"))
}

// A SubscribeInitialize that timed out, called again, waits again: it
// returns nil only once Redis confirmed the subscription.
func TestSubscribeInitializeRetryWaitsForConfirmation(t *testing.T) {
	f := newFixture(t, func(c *redispubsub.SubscriberConfig) { c.SubscribeTimeout = 300 * time.Millisecond })
	f.srv.Kill()
	require.ErrorIs(t, f.sub.SubscribeInitialize("later"), redispubsub.ErrSubscribeTimeout)
	require.ErrorIs(t, f.sub.SubscribeInitialize("later"), redispubsub.ErrSubscribeTimeout,
		"nothing is confirmed while the server is down")
	f.srv.Restart()
	testutil.Eventually(t, func() bool { return f.sub.SubscribeInitialize("later") == nil }, "SubscribeInitialize once the server is back")
	require.EqualValues(t, 1, testutil.Numsub(t, f.srv, "later"))
}
