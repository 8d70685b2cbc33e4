package tests

// The sequence stamp's scope: it speaks only for the channel it was made
// for.

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// A peer that passes received envelopes on to another channel unchanged (a
// TypeScript listener forwarding `detail`) relays their stamps. A stamp
// speaks only for the channel it was made for: one Publisher's messages on
// two channels, relayed into one fan-in channel, are all delivered, none as
// a duplicate, and a relay that passes on every other message causes no
// gap. (The bug: the fan-in Subscriber received 300 of 600, the others
// counted as Duplicates, and the filtering relay produced false gaps.)
func TestStampOfARelayedEnvelopeSpeaksOnlyForItsChannel(t *testing.T) {
	const perChannel = 300
	srv := redistest.Start(t)
	pub, sub := wmPubSub(t, srv, nil)
	fanIn, _ := testutil.Subscribe(t, sub, "relay.in")
	half, _ := testutil.Subscribe(t, sub, "relay.half")

	// The relay: a raw client re-publishing each body as it came.
	relay := srv.NewClient(t)
	ps := relay.Subscribe(context.Background(), "relay.a", "relay.b")
	for range 2 {
		_, err := ps.Receive(context.Background()) // the confirmations
		require.NoError(t, err)
	}
	relayed := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fromA := 0
		for msg := range ps.Channel() {
			err := relay.Publish(context.Background(), "relay.in", msg.Payload).Err()
			if msg.Channel == "relay.a" {
				if fromA++; fromA%2 == 0 && err == nil {
					err = relay.Publish(context.Background(), "relay.half", msg.Payload).Err()
				}
			}
			if err != nil {
				relayed <- err
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = ps.Close()
		wg.Wait()
	})

	for i := range perChannel {
		for _, topic := range []string{"relay.a", "relay.b"} {
			msg := message.NewMessage(watermill.NewUUID(), fmt.Appendf(nil, `{"from":%q,"n":%d}`, topic, i))
			require.NoError(t, pub.Publish(topic, msg))
		}
	}
	testutil.Eventually(t, func() bool {
		select {
		case err := <-relayed:
			t.Fatal(err)
		default:
		}
		return sub.Stats().Received == 2*perChannel+perChannel/2
	}, "every relayed message read")
	stats := sub.Stats()
	require.Zero(t, stats.Duplicates)
	require.Zero(t, stats.Gaps)
	require.Zero(t, stats.PossibleGaps)
	got := map[string]int{}
	for range 2 * perChannel {
		msg := testutil.Receive(t, fanIn)
		got[string(msg.Payload)]++
		msg.Ack()
	}
	require.Len(t, got, 2*perChannel, "every message once")
	for range perChannel / 2 {
		testutil.Receive(t, half).Ack()
	}
}
