package tests

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// An answer given before the subscription ends is counted as that answer,
// never as Discarded: a consumer Acks (or Nacks) and at once cancels its
// Subscribe context, round after round. A Nacked message that cannot be
// delivered again, since its subscription ended, is Discarded too.
func TestAnswerThenEndIsCountedAsTheAnswer(t *testing.T) {
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	const rounds = 40
	for i := range rounds {
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := sub.Subscribe(ctx, "answered")
		require.NoError(t, err)
		require.NoError(t, pub.Publish("answered", wmJSON(`{"n":%d}`, i)))
		msg := testutil.Receive(t, ch)
		if i%2 == 0 {
			msg.Ack()
		} else {
			msg.Nack()
		}
		cancel()
		testutil.RequireClosed(t, ch) // counted by then
	}
	stats := sub.Stats()
	assert.EqualValues(t, rounds/2, stats.Acked)
	assert.EqualValues(t, rounds/2, stats.Nacked)
	assert.EqualValues(t, rounds/2, stats.Discarded, "the Nacked ones only")
}

// SubscribeFrom ended half way through the history: the message Acked
// before is counted as Acked and recovered; the one handed out and not
// answered, and those of the history not handed out yet, as Discarded.
func TestSubscribeFromEndedHalfWayCountsTheRest(t *testing.T) {
	srv := redistest.Start(t)
	pub := recPublisher(t, srv.NewClient(t), 10, nil)
	sub := wmSubscriber(t, srv, nil)
	const topic = "hist.half"
	live, _ := testutil.Subscribe(t, sub, topic)
	recPublish(t, pub, topic, 0, 5)
	epoch := recReceive(t, live, 5)[0].Epoch
	testutil.Eventually(t, func() bool { return sub.Stats().Acked == 5 }, "the live Acks counted")
	before := sub.Stats()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.SubscribeFrom(ctx, topic, redispubsub.Position{Offset: 0, Epoch: epoch})
	require.NoError(t, err)
	recReceive(t, ch, 1)
	testutil.Receive(t, ch) // not answered
	cancel()
	testutil.RequireClosed(t, ch) // Nacks what it receives (then Discarded)
	stats := sub.Stats()
	assert.EqualValues(t, 1, stats.Acked-before.Acked)
	assert.EqualValues(t, 1, stats.Recovered-before.Recovered)
	assert.EqualValues(t, 4, stats.Discarded-before.Discarded, "offsets 2 to 5")
}
