package tests

// The sequence tracking that counts gaps: streams beyond the tracked ones,
// and a loss before the first message of a stream.

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// A pattern subscription over more (publisher, channel) streams than the
// tracker keeps by name (4,096), one CLIENT KILL while nothing is published:
// nothing is lost, and no gap is counted, certain or possible, when each
// stream's next message arrives. (The bug: a forgotten stream's next
// message after a reconnect counted as a lost start: about 9,600 gaps over
// 6,000 streams.)
func TestSequenceStreamsBeyondTheTrackedOnesCountNoFalseGaps(t *testing.T) {
	publishers, channels := 3, 2000 // 6,000 streams
	if testutil.Race || testing.Short() {
		publishers, channels = 2, 2300 // 4,600
	}
	streams := publishers * channels
	srv := redistest.Start(t)
	reconnected := make(chan redispubsub.ReconnectEvent, 1)
	sub := wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) {
		c.OnReconnect = func(ev redispubsub.ReconnectEvent) { reconnected <- ev }
	})
	ch, err := sub.SubscribePattern(testutil.Context(t), "seq.*")
	require.NoError(t, err)
	var delivered atomic.Int64
	go func() {
		for msg := range ch {
			delivered.Add(1)
			msg.Ack()
		}
	}()
	pubs := make([]*redispubsub.Publisher, publishers)
	for i := range pubs {
		pubs[i], err = redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t)}, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = pubs[i].Close() })
	}
	round := func() {
		testutil.Parallel(t, streams, 32, func(i int) error {
			return pubs[i%publishers].Publish(fmt.Sprint("seq.", i/publishers), message.NewMessage(watermill.NewUUID(), []byte(`{}`)))
		})
	}

	round()
	testutil.Eventually(t, func() bool { return sub.Stats().Received == uint64(streams) }, "the first round read")
	require.EqualValues(t, 1, srv.KillClients(t, "TYPE", "pubsub"))
	testutil.Wait(t, reconnected, "OnReconnect")
	round()
	testutil.Eventually(t, func() bool { return delivered.Load() == int64(2*streams) }, "the second round delivered")
	stats := sub.Stats()
	require.Zero(t, stats.Gaps, "nothing was lost")
	require.Zero(t, stats.PossibleGaps, "nothing was lost")
	require.Zero(t, stats.Duplicates)
}

// The README's one-event-per-channel pattern: a subscription that has not
// received anything yet, its connection killed, 5 messages published while
// it reconnects, a 6th after. The 6th arrives and the 5 count as gaps,
// since the stream began after the subscription (MetadataSince). A stream
// that began before the subscription cannot be told apart from one that
// lost its start: it counts once in PossibleGaps. (The bug: loss before a
// subscription's first message was never counted.)
func TestLossBeforeTheFirstMessageIsCounted(t *testing.T) {
	srv := redistest.Start(t)
	gaps := make(chan redispubsub.GapEvent, 16)
	reconnected := make(chan redispubsub.ReconnectEvent, 16)
	pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) {
		c.ReconnectBackoffMin, c.ReconnectBackoffMax = time.Second, time.Second
		c.OnGap = func(ev redispubsub.GapEvent) { gaps <- ev }
		c.OnReconnect = func(ev redispubsub.ReconnectEvent) { reconnected <- ev }
	})
	// "before" has a stream that began before its subscription.
	require.NoError(t, pub.Publish("call.before:1", testutil.Messages(3, `{}`)...))
	fresh, _ := testutil.Subscribe(t, sub, "call.responded:1")
	before, _ := testutil.Subscribe(t, sub, "call.before:1")

	srv.KillClients(t, "TYPE", "pubsub")
	testutil.Eventually(t, func() bool { return testutil.Numsub(t, srv, "call.responded:1") == 0 }, "the subscription is gone")
	require.NoError(t, pub.Publish("call.responded:1", testutil.Messages(5, `{"lost":true}`)...))
	require.NoError(t, pub.Publish("call.before:1", testutil.Messages(2, `{"lost":true}`)...))
	testutil.Wait(t, reconnected, "OnReconnect")
	require.NoError(t, pub.Publish("call.responded:1", message.NewMessage("sixth", []byte(`{}`))))
	require.NoError(t, pub.Publish("call.before:1", message.NewMessage("sixth", []byte(`{}`))))

	require.Equal(t, "sixth", testutil.Receive(t, fresh).UUID)
	require.Equal(t, "sixth", testutil.Receive(t, before).UUID)
	got := map[string]redispubsub.GapEvent{}
	for range 2 {
		ev := testutil.Wait(t, gaps, "OnGap")
		got[ev.Topic] = ev
	}
	require.Equal(t, redispubsub.GapEvent{Topic: "call.responded:1", Publisher: got["call.responded:1"].Publisher, First: 1, Last: 5},
		got["call.responded:1"])
	require.True(t, got["call.before:1"].Possible)
	require.EqualValues(t, 1, got["call.before:1"].First)
	require.EqualValues(t, 5, got["call.before:1"].Last)
	stats := sub.Stats()
	require.EqualValues(t, 5, stats.Gaps)
	require.EqualValues(t, 1, stats.PossibleGaps)
}
