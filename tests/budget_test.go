package tests

// What the Subscriber holds in memory: the buffer budget spent by thousands
// of stalled subscriptions or by one message larger than all of it, a burst
// into a slow consumer delivered whole, bodies over MaxMessageBytes skipped.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
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

// Thousands of stalled subscriptions of one topic, each holding far less
// than the budget, spend the default budget between them; every message of
// the topic then needs a drop for each of its queued copies. Choosing whom
// to drop must not walk every subscription: the reader's time per queued
// copy is about what it is with a few stalled subscriptions, a healthy topic
// on the same Subscriber gets every message, and Redis never disconnects
// the Subscriber. (The bug: a walk over all subscriptions per queued copy;
// with 5,000 of them the reader read 31% of what was published and Redis
// closed the connection. Here a copy cost 7 to 12 times as much with 5,000
// stalled subscriptions as with 20, 20 to 50 times with 2,000 under -race;
// now 0.3 to 1.3 times.)
//
// The two Subscribers are measured in the same run, their rounds
// alternating, so that the test depends neither on the machine's speed nor
// on its load changing.
func TestBudgetSpentByThousandsOfStalledSubscriptionsKeepsTheReaderUp(t *testing.T) {
	many := 5000
	if testutil.Race || testing.Short() {
		many = 2000
	}
	const few = 20
	srv := redistest.Start(t, "--client-output-buffer-limit", "pubsub 4mb 2mb 10")
	rigs := []*budgetRig{newBudgetRig(t, srv, few), newBudgetRig(t, srv, many)}
	for _, r := range rigs {
		r.spend(t)
	}
	const rounds = 8
	times := [2][]time.Duration{}
	for range rounds {
		for i, r := range rigs {
			times[i] = append(times[i], r.round(t))
		}
	}
	var perCopy [2]time.Duration
	for i, r := range rigs {
		slices.Sort(times[i])
		perCopy[i] = times[i][rounds/2] / time.Duration(r.batch*r.stalled)
		stats := r.check(t)
		t.Logf("%d stalled subscriptions, batches of %d: rounds %v; dropped %d", r.stalled, r.batch, times[i], stats.Dropped)
	}
	t.Logf("with the budget spent, a queued copy takes the reader %v with %d stalled subscriptions, %v with %d (%.1fx)",
		perCopy[0], few, perCopy[1], many, float64(perCopy[1])/float64(perCopy[0]))
	require.Less(t, perCopy[1], 3*perCopy[0], "the reader's time per copy grows with the stalled subscriptions")
}

// budgetRig is a Subscriber with the default budget, stalled subscriptions
// of one topic and a healthy one of another, and a Publisher.
type budgetRig struct {
	srv            *redistest.Server
	sub            *redispubsub.Subscriber
	pub            *redispubsub.Publisher
	topic, healthy string
	stalled, batch int
	payload        []byte
	arrived        chan string
}

func newBudgetRig(t *testing.T, srv *redistest.Server, stalled int) *budgetRig {
	// A round queues about this many copies.
	const copiesPerRound = 12_000
	r := &budgetRig{
		srv: srv, stalled: stalled, batch: max(1, copiesPerRound/stalled),
		topic: fmt.Sprint("budget.stalled.", stalled), healthy: fmt.Sprint("budget.live.", stalled),
		arrived: make(chan string, 1),
	}
	// Each stalled subscription logs its drops once a second: thousands of
	// lines a second, which a test's logger would turn into noise in the
	// measured times.
	var err error
	r.sub, err = redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: faultClient(t, srv.Addr(), nil)}, watermill.NopLogger{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.sub.Close()) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	testutil.Parallel(t, stalled, 32, func(int) error {
		_, err := r.sub.Subscribe(ctx, r.topic) // never read
		return err
	})
	live, err := r.sub.Subscribe(ctx, r.healthy)
	require.NoError(t, err)
	go func() {
		for msg := range live {
			msg.Ack()
			r.arrived <- msg.UUID
		}
	}()
	r.pub, err = redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: faultClient(t, srv.Addr(), nil)}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.pub.Close()) })
	r.payload, err = json.Marshal(strings.Repeat("x", 198))
	require.NoError(t, err)
	return r
}

// round publishes a batch to the stalled topic, then a message to the
// healthy one, and returns how long it took until that message arrived.
func (r *budgetRig) round(t *testing.T) time.Duration {
	msgs := make([]*message.Message, r.batch)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), r.payload)
	}
	marker := message.NewMessage(watermill.NewUUID(), []byte(`{}`))
	start := time.Now()
	require.NoError(t, r.pub.Publish(r.topic, msgs...))
	require.NoError(t, r.pub.Publish(r.healthy, marker))
	require.Equal(t, marker.UUID, testutil.Wait(t, r.arrived, "the healthy topic's message"))
	return time.Since(start)
}

// spend publishes rounds until the budget is spent.
func (r *budgetRig) spend(t *testing.T) {
	for r.sub.Stats().Dropped == 0 {
		r.round(t)
	}
	r.round(t) // the first drops: every subscription's first drop is logged
	require.Greater(t, r.sub.Stats().BufferedBytes, int64(redispubsub.DefaultBufferBytes)*9/10, "the budget is spent")
}

// check checks that the healthy topic lost nothing and that Redis never
// disconnected the Subscriber, and returns its stats.
func (r *budgetRig) check(t *testing.T) redispubsub.SubscriberStats {
	stats := r.sub.Stats()
	require.Zero(t, stats.Reconnects, "Redis disconnected the Subscriber")
	logText, err := os.ReadFile(r.srv.LogPath())
	require.NoError(t, err)
	require.NotContains(t, string(logText), "output buffer limits", "Redis closed a client for its output buffer")
	require.Zero(t, stats.DroppedByTopic[r.healthy], "the healthy topic loses nothing")
	require.Equal(t, stats.Dropped, stats.DroppedByTopic[r.topic])
	return stats
}

// A message larger than the whole budget (BufferBytes) is dropped at once,
// counted under its topic, and no other subscription loses anything for
// it, under either policy. (The bug: a stalled subscription lost its queued
// messages to make room, up to 1,024 of them, and the big message was
// dropped anyway: 799 of 800 lost.)
func TestBudgetMessageLargerThanTheBudgetCostsNobodyElse(t *testing.T) {
	for _, policy := range []redispubsub.OverflowPolicy{redispubsub.DropNewest, redispubsub.DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			const (
				budget  = 1 << 20
				stalled = 600 // of about 1.3 KiB counted each: 0.8 MiB
			)
			srv := redistest.Start(t)
			pub, sub := wmPubSub(t, srv, func(c *redispubsub.SubscriberConfig) {
				c.BufferBytes, c.Overflow = budget, policy
			})
			slow, _ := testutil.Subscribe(t, sub, "budget.slow")
			big, _ := testutil.Subscribe(t, sub, "budget.big")
			payload, err := json.Marshal(strings.Repeat("s", 1<<10))
			require.NoError(t, err)
			require.NoError(t, pub.Publish("budget.slow", testutil.Messages(stalled, string(payload))...))
			testutil.Eventually(t, func() bool { return sub.Stats().Received == stalled }, "the slow topic's messages read")

			huge, err := json.Marshal(strings.Repeat("b", budget+budget/2))
			require.NoError(t, err)
			require.NoError(t, pub.Publish("budget.big", message.NewMessage(watermill.NewUUID(), huge)))
			// Received counts the body as it is read, the drop is counted
			// just after.
			testutil.Eventually(t, func() bool { return sub.Stats().Dropped == 1 }, "the big message read and dropped")
			stats := sub.Stats()
			require.EqualValues(t, stalled+1, stats.Received)
			require.Equal(t, map[string]uint64{"budget.big": 1}, stats.DroppedByTopic, "only the message that never fits is dropped")
			require.EqualValues(t, 1, stats.Dropped)

			for i := range stalled {
				msg := testutil.Receive(t, slow)
				require.Equal(t, string(payload), string(msg.Payload), "message %d", i)
				msg.Ack()
			}
			// The subscription of the big message goes on.
			require.NoError(t, pub.Publish("budget.big", message.NewMessage("after", []byte(`{}`))))
			msg := testutil.Receive(t, big)
			require.Equal(t, "after", msg.UUID)
			msg.Ack()
		})
	}
}

// 100,000 messages with bodies of about 256 B (25 MB, under Redis's default
// pubsub output-buffer limit) published in pipelines of 1,000 into a consumer that
// takes about 20,000 a second: raw go-redis receives them all, and so does
// the adapter with its default configuration. (The bug: a queue of 1,024
// messages per subscription, and 89,875 of them dropped.)
func TestBurstIntoASlowConsumerIsDeliveredWhole(t *testing.T) {
	n := 100_000
	if testutil.Race || testing.Short() {
		n = 20_000
	}
	const batch = 1000
	srv := redistest.Start(t)
	raw := srv.NewClient(t)
	rawSub := raw.Subscribe(context.Background(), "burst")
	t.Cleanup(func() { _ = rawSub.Close() })
	_, err := rawSub.Receive(context.Background()) // the confirmation
	require.NoError(t, err)
	pub, sub := wmPubSub(t, srv, nil)
	ch, _ := testutil.Subscribe(t, sub, "burst")

	// slowly paces a consumer at about 20,000 messages a second.
	slowly := func(i int) {
		if i%100 == 99 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	var rawGot, adapterGot atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			if _, err := rawSub.ReceiveMessage(context.Background()); err != nil {
				return
			}
			rawGot.Add(1)
			slowly(i)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			msg, ok := <-ch
			if !ok {
				return
			}
			msg.Ack()
			adapterGot.Add(1)
			slowly(i)
		}
	}()
	// Bodies of about 256 B, envelope and stamp included: 25 MB in all.
	payload, err := json.Marshal(strings.Repeat("p", 78))
	require.NoError(t, err)
	for i := 0; i < n; i += batch {
		require.NoError(t, pub.Publish("burst", testutil.Messages(batch, string(payload))...))
	}
	waited := make(chan struct{})
	go func() {
		wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("raw go-redis received %d, the adapter %d of %d; stats %+v", rawGot.Load(), adapterGot.Load(), n, sub.Stats())
	}
	stats := sub.Stats()
	require.EqualValues(t, n, rawGot.Load(), "raw go-redis")
	require.EqualValues(t, n, adapterGot.Load(), "the adapter; stats %+v", stats)
	require.Zero(t, stats.Dropped)
}

// A body larger than MaxMessageBytes is skipped without decoding, counted
// and logged; the subscription goes on.
func TestOversizedBodiesAreSkipped(t *testing.T) {
	srv := redistest.Start(t)
	sub := wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) { c.MaxMessageBytes = 1024 })
	ch, _ := testutil.Subscribe(t, sub, "sized")
	raw := srv.NewClient(t)
	require.NoError(t, raw.Publish(context.Background(), "sized", `{"payload":"`+strings.Repeat("x", 2048)+`"}`).Err())
	require.NoError(t, raw.Publish(context.Background(), "sized", `{"payload":"small"}`).Err())
	msg := testutil.Receive(t, ch)
	require.Equal(t, `"small"`, string(msg.Payload))
	msg.Ack()
	require.EqualValues(t, 1, sub.Stats().Oversized)
}
