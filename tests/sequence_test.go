package tests

// Regression tests of the sequence tracking that counts gaps (issue 17).

import (
	"fmt"
	"sync/atomic"
	"testing"

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
