package tests

// Recovery: a Publisher with History, Subscribers with Recover and
// SubscribeFrom, on real servers.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// recPublisher returns a Publisher with a history of size messages on
// client, closed at the end of the test.
func recPublisher(t testing.TB, client redis.UniversalClient, size int, configure func(*redispubsub.PublisherConfig)) *redispubsub.Publisher {
	t.Helper()
	config := redispubsub.PublisherConfig{Client: client, History: redispubsub.History{Size: size}}
	if configure != nil {
		configure(&config)
	}
	pub, err := redispubsub.NewPublisher(config, testutil.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	return pub
}

// recPublish publishes n messages on topic, one Publish call each, with
// payloads {"n":first}, {"n":first+1}, ...
func recPublish(t testing.TB, pub *redispubsub.Publisher, topic string, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		require.NoError(t, pub.Publish(topic, message.NewMessage(strconv.Itoa(i), []byte(fmt.Sprintf(`{"n":%d}`, i)))))
	}
}

// recReceive receives n messages from ch, Acks them and returns their
// positions.
func recReceive(t testing.TB, ch <-chan *message.Message, n int) []redispubsub.Position {
	t.Helper()
	positions := make([]redispubsub.Position, 0, n)
	for range n {
		msg := testutil.Receive(t, ch)
		pos, ok := redispubsub.PositionOf(msg)
		require.True(t, ok, "message %s has no position: %v", msg.UUID, msg.Metadata)
		positions = append(positions, pos)
		msg.Ack()
	}
	return positions
}

// requireConsecutive checks that positions are the offsets from, from+1,
// ... of one epoch.
func requireConsecutive(t testing.TB, positions []redispubsub.Position, from uint64) {
	t.Helper()
	for i, pos := range positions {
		require.Equal(t, from+uint64(i), pos.Offset, "offset %d of %d (%v)", i, len(positions), positions)
		require.Equal(t, positions[0].Epoch, pos.Epoch)
	}
}

// A Publisher with a history stamps every message with consecutive offsets
// of its channel (shared with a second Publisher) and the history's epoch;
// the history holds the last Size messages, in a stream whose entries are
// the bodies published; its keys expire after TTL without publications.
func TestHistoryStampsOffsetsAndKeepsTheLast(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	pub1 := recPublisher(t, client, 5, nil)
	pub2 := recPublisher(t, srv.NewClient(t), 5, func(c *redispubsub.PublisherConfig) { c.History.TTL = time.Minute })
	sub := wmSubscriber(t, srv, nil)
	ch, _ := testutil.Subscribe(t, sub, "hist.stamp")

	recPublish(t, pub1, "hist.stamp", 0, 3)
	recPublish(t, pub2, "hist.stamp", 3, 4)
	positions := recReceive(t, ch, 7)
	requireConsecutive(t, positions, 1)

	ctx := testutil.Context(t)
	entries, err := client.XRange(ctx, "rps:hist:{hist.stamp}", "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 5)
	assert.Equal(t, "3-0", entries[0].ID)
	assert.Equal(t, "7-0", entries[4].ID)
	assert.Contains(t, entries[4].Values["d"], `"rps_epoch":"`+positions[0].Epoch+`","rps_offset":"7"`)
	meta, err := client.HGetAll(ctx, "rps:meta:{hist.stamp}").Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"e": positions[0].Epoch, "s": "7"}, meta)
	ttl, err := client.PTTL(ctx, "rps:hist:{hist.stamp}").Result()
	require.NoError(t, err)
	assert.True(t, ttl > 50*time.Second && ttl <= time.Minute, "TTL %v: the last publication's", ttl)

	// Lost (flushed): a new epoch, offsets from 1 again.
	require.NoError(t, client.FlushAll(ctx).Err())
	recPublish(t, pub1, "hist.stamp", 7, 1)
	again := recReceive(t, ch, 1)
	assert.Equal(t, uint64(1), again[0].Offset)
	assert.NotEqual(t, positions[0].Epoch, again[0].Epoch)
}

// SubscribeFrom delivers what the history holds after the position, then
// the live messages, without a gap or a duplicate; a position the history
// no longer holds is refused with ErrPositionLost and leaves nothing
// subscribed.
func TestSubscribeFrom(t *testing.T) {
	srv := redistest.Start(t)
	pub := recPublisher(t, srv.NewClient(t), 10, nil)
	sub := wmSubscriber(t, srv, nil)
	const topic = "hist.from"
	live, _ := testutil.Subscribe(t, sub, topic)
	recPublish(t, pub, topic, 0, 15) // offsets 1..15; held: 6..15
	positions := recReceive(t, live, 15)
	epoch := positions[0].Epoch

	top := uint64(15)
	for _, tc := range []struct {
		name  string
		after func() uint64
	}{
		{"oldest", func() uint64 { return top - 10 }},
		{"middle", func() uint64 { return top - 4 }},
		{"newest", func() uint64 { return top }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := tc.after()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := sub.SubscribeFrom(ctx, topic, redispubsub.Position{Offset: after, Epoch: epoch})
			require.NoError(t, err)
			recPublish(t, pub, topic, 100, 1) // live, while the history is handed out
			top++
			got := recReceive(t, ch, int(top-after))
			requireConsecutive(t, got, after+1)
			assert.Equal(t, epoch, got[0].Epoch)
			recReceive(t, live, 1)
			cancel()
			testutil.RequireClosed(t, ch)
		})
	}

	for _, tc := range []struct {
		name string
		from redispubsub.Position
	}{
		{"trimmed", redispubsub.Position{Offset: 3, Epoch: epoch}},
		{"other epoch", redispubsub.Position{Offset: 12, Epoch: "gone"}},
		{"ahead", redispubsub.Position{Offset: 1000, Epoch: epoch}},
	} {
		t.Run("lost "+tc.name, func(t *testing.T) {
			before := testutil.Numsub(t, srv, topic)
			_, err := sub.SubscribeFrom(context.Background(), topic, tc.from)
			require.ErrorIs(t, err, redispubsub.ErrPositionLost)
			t.Log(err)
			assert.Equal(t, before, testutil.Numsub(t, srv, topic), "nothing left subscribed")
		})
	}
	_, err := sub.SubscribeFrom(context.Background(), "hist.none", redispubsub.Position{Offset: 1, Epoch: epoch})
	require.True(t, errors.Is(err, redispubsub.ErrPositionLost), "no history: %v", err)
}
