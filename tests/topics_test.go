package tests

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

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
