package tests

// Topics and patterns: 100,000 topics on one Subscriber, a pattern under a
// prefix that is not UTF-8, a topic held by SubscribeInitialize.

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// 100,000 live topics on one Subscriber with the default configuration
// (10,000 under -race or -short), the README's one-channel-per-call pattern:
// subscribed from 1,000 goroutines at a time, each receiving its message,
// then all cancelled: Redis holds no subscription any more and no goroutine
// of theirs is left.
func TestHundredThousandTopics(t *testing.T) {
	n := 100_000
	if testutil.Race || testing.Short() {
		n = 10_000
	}
	const workers = 1000
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	topic := func(i int) string { return fmt.Sprintf("call.responded:%d", i) }
	// Warm up the connection and the publisher, then count goroutines.
	_, cancelWarm := testutil.Subscribe(t, sub, "warm")
	require.NoError(t, pub.Publish("warm", testutil.Messages(1, `{}`)...))
	cancelWarm()
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, srv, "warm") == 0 })
	baseline := runtime.NumGoroutine()

	chans := make([]<-chan *message.Message, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testutil.Parallel(t, n, workers, func(i int) error {
		ch, err := sub.Subscribe(ctx, topic(i))
		chans[i] = ch
		return err
	})
	testutil.Parallel(t, n, 64, func(i int) error {
		return pub.Publish(topic(i), message.NewMessage(fmt.Sprint(i), []byte(`{}`)))
	})
	testutil.Parallel(t, n, workers, func(i int) error {
		msg, err := testutil.TryReceive(chans[i])
		if err != nil {
			return fmt.Errorf("topic %d: %w", i, err)
		}
		if msg.UUID != fmt.Sprint(i) {
			return fmt.Errorf("topic %d got message %s", i, msg.UUID)
		}
		msg.Ack()
		return nil
	})
	require.Zero(t, sub.Stats().Dropped)

	cancel()
	for _, ch := range chans {
		testutil.RequireClosed(t, ch)
	}
	testutil.Eventually(t, func() bool {
		channels, _ := srv.Do(t, "PUBSUB", "CHANNELS", "call.responded:*").([]any)
		return len(channels) == 0
	}, "Redis still holds subscriptions")
	require.EqualValues(t, 0, testutil.Numsub(t, srv, topic(n-1)))
	testutil.GoroutinesAtMost(t, baseline)
}

// A ChannelPrefix with a byte that is not UTF-8 and a glob character:
// SubscribePattern escapes it byte for byte and receives. (The bug: the
// escaping walked runes and turned the byte into U+FFFD.)
func TestPatternWithAPrefixThatIsNotUTF8(t *testing.T) {
	const prefix = "app[\xff]:"
	srv := redistest.Start(t)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t), ChannelPrefix: prefix}, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	sub := wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) { c.ChannelPrefix = prefix })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.SubscribePattern(ctx, "ev.*")
	require.NoError(t, err)
	require.NoError(t, pub.Publish("ev.1", message.NewMessage(watermill.NewUUID(), []byte(`{}`))))
	msg := testutil.Receive(t, ch)
	require.Equal(t, "ev.1", msg.Metadata.Get(redispubsub.MetadataTopic))
	msg.Ack()
}

// A first Subscribe after SubscribeInitialize with a context already
// cancelled returns its error and leaves what SubscribeInitialize holds for
// the next Subscribe. (The bug: a nil error in 59 of 100 tries, and the
// held message lost in all 100.)
func TestFailedFirstSubscribeLeavesTheHeldMessages(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	for i := range 100 {
		topic := fmt.Sprintf("held.%d", i)
		require.NoError(t, sub.SubscribeInitialize(topic))
		require.NoError(t, pub.Publish(topic, message.NewMessage("held", []byte(`{}`))))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := sub.Subscribe(ctx, topic)
		require.ErrorIs(t, err, context.Canceled)
		ch, cancelSub := testutil.Subscribe(t, sub, topic)
		msg := testutil.Receive(t, ch)
		require.Equal(t, "held", msg.UUID)
		msg.Ack()
		cancelSub()
	}
}
