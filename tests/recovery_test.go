package tests

// Recovery: a Publisher with History, Subscribers with Recover and
// SubscribeFrom, on real servers.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
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
	// The list holds the records of offsets 3 to 7: messages 2 to 6.
	records, err := client.LRange(ctx, "rps:hlist:{hist.stamp}", 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, records, 5)
	assert.True(t, strings.HasSuffix(records[0], `{"n":2}`), "%q", records[0])
	assert.True(t, strings.HasSuffix(records[4], `{"n":6}`), "%q", records[4])
	meta, err := client.HMGet(ctx, "rps:hmeta:{hist.stamp}", "e", "s").Result()
	require.NoError(t, err)
	assert.Equal(t, []any{positions[0].Epoch, "7"}, meta)
	ttl, err := client.PTTL(ctx, "rps:hlist:{hist.stamp}").Result()
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

// recConsumer records the positions one subscription receives, and Acks.
type recConsumer struct {
	mu        sync.Mutex
	positions []redispubsub.Position
	unstamped int
	done      chan struct{}
}

func recConsume(ch <-chan *message.Message) *recConsumer {
	c := &recConsumer{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for msg := range ch {
			pos, ok := redispubsub.PositionOf(msg)
			c.mu.Lock()
			if ok {
				c.positions = append(c.positions, pos)
			} else {
				c.unstamped++
			}
			c.mu.Unlock()
			msg.Ack()
		}
	}()
	return c
}

func (c *recConsumer) snapshot() []redispubsub.Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.positions)
}

func (c *recConsumer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.positions)
}

// last returns the last offset received, 0 before any.
func (c *recConsumer) last() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.positions) == 0 {
		return 0
	}
	return c.positions[len(c.positions)-1].Offset
}

// recTop returns the last offset the history of channel gave.
func recTop(t testing.TB, client redis.UniversalClient, channel string) uint64 {
	t.Helper()
	s, err := client.HGet(context.Background(), "rps:hmeta:{"+channel+"}", "s").Result()
	require.NoError(t, err)
	n, err := strconv.ParseUint(s, 10, 64)
	require.NoError(t, err)
	return n
}

// Three Publishers publish on three topics while the Subscriber's
// connection is killed (CLIENT KILL) twice and the server is restarted
// (gracefully, with an append-only file: the history survives, the loaded
// scripts do not). With Recover, every subscription receives every offset
// of its channel exactly once, in order, and nothing is unrecovered; without,
// the same run counts gaps.
func TestRecoverAcrossKillsAndRestart(t *testing.T) {
	for _, recover := range []bool{true, false} {
		t.Run(fmt.Sprintf("recover=%v", recover), func(t *testing.T) {
			testRecoverAcrossKillsAndRestart(t, recover)
		})
	}
}

func testRecoverAcrossKillsAndRestart(t *testing.T, recover bool) {
	topics := []string{"rec.kill.a", "rec.kill.b", "rec.kill.c"}
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	log := newFaultLog(t)
	reconnects := make(chan redispubsub.ReconnectEvent, 16)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client:      faultClient(t, srv.Addr(), nil),
		Recover:     recover,
		OnReconnect: func(ev redispubsub.ReconnectEvent) { reconnects <- ev },
	}, log)
	consumers := make(map[string][]*recConsumer)
	for _, topic := range topics {
		for range 2 {
			ch, _ := testutil.Subscribe(t, sub, topic)
			consumers[topic] = append(consumers[topic], recConsume(ch))
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		pub := recPublisher(t, faultClient(t, srv.Addr(), nil), 100_000, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := message.NewMessage(strconv.Itoa(i), []byte(`{"n":`+strconv.Itoa(i)+`}`))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				msg.SetContext(ctx)
				_ = pub.Publish(topics[i%len(topics)], msg) // fails while the server is down
				cancel()
			}
		}()
	}
	progress := func(what string) {
		t.Helper()
		marks := make(map[*recConsumer]int)
		for _, cs := range consumers {
			for _, c := range cs {
				marks[c] = c.count()
			}
		}
		testutil.Eventually(t, func() bool {
			for c, n := range marks {
				if c.count() < n+50 {
					return false
				}
			}
			return true
		}, what)
	}
	progress("messages before the faults")
	for range 2 {
		require.Positive(t, srv.KillClients(t, "TYPE", "pubsub"))
		testutil.Wait(t, reconnects, "reconnect after CLIENT KILL")
		progress("messages after CLIENT KILL")
	}
	srv.Stop()
	srv.Restart()
	testutil.Wait(t, reconnects, "reconnect after the restart")
	progress("messages after the restart")
	close(stop)
	wg.Wait()

	client := srv.NewClient(t)
	missing := 0
	for _, topic := range topics {
		top := recTop(t, client, topic)
		for _, c := range consumers[topic] {
			if recover {
				testutil.Eventually(t, func() bool { return c.last() == top }, "every offset of "+topic)
				got := c.snapshot()
				require.Len(t, got, int(top), "%s: each offset once", topic)
				requireConsecutive(t, got, 1)
				continue
			}
			// Without recovery: what was lost is lost; the last
			// message arrives (nothing is lost once the faults are over).
			testutil.Eventually(t, func() bool { return c.last() == top }, "the last offset of "+topic)
			missing += int(top) - c.count()
		}
	}
	stats := sub.Stats()
	t.Logf("recover=%v: %+v; missing %d", recover, stats, missing)
	if recover {
		assert.Zero(t, stats.Unrecovered)
		assert.Zero(t, stats.HistoryLost)
		assert.Positive(t, stats.Recovered)
		return
	}
	require.Positive(t, missing)
	// Counted by offset, once per Redis subscription (two consumers each):
	// exactly what was missed.
	assert.Equal(t, uint64(missing), 2*stats.Gaps)
	assert.Zero(t, stats.Recovered)
}

// recOutage cuts the Subscriber behind proxy off Redis (its connection
// closed, new ones silent), runs during, and lets it reconnect; it returns
// once the Subscriber resubscribed.
func recOutage(t testing.TB, proxy *redistest.Proxy, reconnects <-chan redispubsub.ReconnectEvent, during func()) {
	t.Helper()
	proxy.Blackhole()
	proxy.CloseConnections()
	during()
	proxy.Resume()
	proxy.CloseConnections() // an attempt that went silent gives up now
	testutil.Wait(t, reconnects, "reconnect after the outage")
}

// recOutageSubscriber returns a recovering Subscriber whose Redis is behind
// a proxy, its reconnects, and the gaps it reports; configure changes its
// config.
func recOutageSubscriber(t testing.TB, srv *redistest.Server, configure ...func(*redispubsub.SubscriberConfig)) (
	*redispubsub.Subscriber, *redistest.Proxy, chan redispubsub.ReconnectEvent, chan redispubsub.GapEvent) {
	proxy := redistest.NewProxy(t, srv.Addr())
	reconnects := make(chan redispubsub.ReconnectEvent, 4)
	gaps := make(chan redispubsub.GapEvent, 16)
	config := redispubsub.SubscriberConfig{
		Client:      faultClient(t, proxy.Addr(), nil),
		Recover:     true,
		OnReconnect: func(ev redispubsub.ReconnectEvent) { reconnects <- ev },
		OnGap:       func(ev redispubsub.GapEvent) { gaps <- ev },
	}
	for _, f := range configure {
		f(&config)
	}
	sub := faultSubscriber(t, config, newFaultLog(t))
	return sub, proxy, reconnects, gaps
}

// An outage longer than the history: what fell out of it is counted,
// exactly, and reported; what it held is delivered, then the live
// messages.
func TestRecoverOutageLongerThanHistory(t *testing.T) {
	srv := redistest.Start(t)
	pub := recPublisher(t, srv.NewClient(t), 5, nil)
	sub, proxy, reconnects, gaps := recOutageSubscriber(t, srv)
	const topic = "rec.long"
	ch, _ := testutil.Subscribe(t, sub, topic)

	recPublish(t, pub, topic, 0, 1)
	first := recReceive(t, ch, 1)
	recOutage(t, proxy, reconnects, func() { recPublish(t, pub, topic, 1, 20) }) // offsets 2..21; held: 17..21
	got := recReceive(t, ch, 5)
	recPublish(t, pub, topic, 21, 1) // 22, live
	got = append(got, recReceive(t, ch, 1)...)
	requireConsecutive(t, got, 17)
	assert.Equal(t, first[0].Epoch, got[0].Epoch)

	ev := testutil.Wait(t, gaps, "the unrecovered gap")
	assert.Equal(t, redispubsub.GapEvent{Topic: topic, First: 2, Last: 16, Unrecovered: true}, ev)
	stats := sub.Stats()
	assert.Equal(t, uint64(15), stats.Unrecovered)
	assert.Equal(t, uint64(5), stats.Recovered)
	assert.Zero(t, stats.HistoryLost)
	assert.Zero(t, stats.Gaps)
}

// The history's keys deleted during an outage: the new epoch is detected
// and counted, and the new history delivered from its start.
func TestRecoverHistoryLostDuringOutage(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	pub := recPublisher(t, client, 100, nil)
	sub, proxy, reconnects, gaps := recOutageSubscriber(t, srv)
	const topic = "rec.lost"
	ch, _ := testutil.Subscribe(t, sub, topic)

	recPublish(t, pub, topic, 0, 2)
	before := recReceive(t, ch, 2)
	recOutage(t, proxy, reconnects, func() {
		recPublish(t, pub, topic, 2, 5)
		require.NoError(t, client.Del(context.Background(), "rps:hlist:{"+topic+"}", "rps:hmeta:{"+topic+"}").Err())
		recPublish(t, pub, topic, 7, 3) // offsets 1..3 of a new epoch
	})
	got := recReceive(t, ch, 3)
	recPublish(t, pub, topic, 10, 1) // 4, live
	got = append(got, recReceive(t, ch, 1)...)
	requireConsecutive(t, got, 1)
	assert.NotEqual(t, before[0].Epoch, got[0].Epoch)

	ev := testutil.Wait(t, gaps, "the history lost")
	assert.Equal(t, redispubsub.GapEvent{Topic: topic, First: 3, Unrecovered: true, HistoryLost: true}, ev)
	assert.Zero(t, ev.Missing())
	stats := sub.Stats()
	assert.Equal(t, uint64(1), stats.HistoryLost)
	assert.Zero(t, stats.Unrecovered)
	assert.Equal(t, uint64(3), stats.Recovered)
}

// Sharded mode on a cluster: the slot of a channel with a history migrates
// (its keys with it) while a Publisher publishes; the recovering
// Subscriber follows the slot and reads what it missed from the history at
// the new owner: every offset once, in order, nothing unrecovered.
func TestRecoverShardedAcrossSlotMigration(t *testing.T) {
	cluster := redistest.StartCluster(t, 2)
	nodes := cluster.Nodes()
	topic := cgTopicOn("rec.moving", 0, 2)
	client := cluster.NewClient(t)
	pub := recPublisher(t, client, 100_000, func(c *redispubsub.PublisherConfig) {
		c.ChannelPrefix, c.Sharded = cgPrefix, true
	})
	sub := cgShardedSubscriber(t, cluster.NewClient(t), func(c *redispubsub.SubscriberConfig) { c.Recover = true })
	ch, _ := testutil.Subscribe(t, sub, topic)
	c := recConsume(ch)

	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = pub.Publish(topic, message.NewMessage(strconv.Itoa(i), []byte(`{}`))) // may fail while the slot moves
		}
	}()
	testutil.Eventually(t, func() bool { return c.count() > 100 }, "messages before the migration")
	before := c.count()
	cluster.MigrateSlot(t, redisproc.KeySlot(cgPrefix+topic), nodes[1])
	testutil.Eventually(t, func() bool { return c.count() > before+200 }, "messages after the migration")
	close(stop)
	<-published

	top := recTop(t, client, cgPrefix+topic)
	testutil.Eventually(t, func() bool { return c.last() == top }, "every offset")
	got := c.snapshot()
	require.Len(t, got, int(top))
	requireConsecutive(t, got, 1)
	stats := sub.Stats()
	t.Logf("%d messages, stats %+v", top, stats)
	assert.Zero(t, stats.Unrecovered)
	assert.Zero(t, stats.HistoryLost)
}

type recEvent struct {
	N int `json:"n"`
}

// An EventTarget listener with FromPosition gets the events the history
// holds after the position, then the live ones, on a subscription of its
// own beside the topic's shared one; a lost position fails
// AddEventListener with ErrPositionLost, and a Subscriber that cannot start
// from a position with ErrPositionsUnsupported.
func TestEventTargetFromPosition(t *testing.T) {
	srv := redistest.Start(t)
	pub := recPublisher(t, srv.NewClient(t), 100, nil)
	sub := wmSubscriber(t, srv, nil)
	target, err := redispubsub.NewEventTarget[recEvent](pub, sub)
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Close() })
	ctx := testutil.Context(t)
	const topic = "chat.msg:room-7"

	type got struct {
		n   int
		pos redispubsub.Position
	}
	listener := func(ch chan got) func(context.Context, redispubsub.Event[recEvent]) {
		return func(_ context.Context, ev redispubsub.Event[recEvent]) {
			pos, _ := redispubsub.PositionOf(ev.Message)
			ch <- got{ev.Payload.N, pos}
		}
	}
	all := make(chan got, 16)
	_, err = target.AddEventListener(ctx, topic, listener(all))
	require.NoError(t, err)
	dispatch := func(n int) {
		require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[recEvent]{Type: "chat.msg", ID: "room-7", Payload: recEvent{N: n}}))
	}
	var positions []redispubsub.Position
	for n := 1; n <= 5; n++ {
		dispatch(n)
		g := testutil.Wait(t, all, "event")
		require.Equal(t, n, g.n)
		positions = append(positions, g.pos)
	}

	late := make(chan got, 16)
	l, err := target.AddEventListener(ctx, topic, listener(late), redispubsub.FromPosition(positions[1]))
	require.NoError(t, err)
	// A topic named like that subscription's key once was (a NUL and its
	// number after the topic) is a topic of its own, not that subscription.
	odd := make(chan got, 16)
	_, err = target.AddEventListener(ctx, topic+"\x001", listener(odd))
	require.NoError(t, err)
	dispatch(6)
	for n := 3; n <= 6; n++ {
		g := testutil.Wait(t, late, "event from the position")
		require.Equal(t, n, g.n)
		require.Equal(t, uint64(n), g.pos.Offset)
	}
	require.Equal(t, 6, testutil.Wait(t, all, "live event").n)
	require.NoError(t, target.DispatchEvent(ctx, redispubsub.Event[recEvent]{Type: "chat.msg", ID: "room-7\x001", Payload: recEvent{N: 99}}))
	require.Equal(t, 99, testutil.Wait(t, odd, "the odd topic's own event").n)
	l.Remove()

	_, err = target.AddEventListener(ctx, topic, listener(late), redispubsub.FromPosition(redispubsub.Position{Offset: 2, Epoch: "old"}))
	require.ErrorIs(t, err, redispubsub.ErrPositionLost)

	chanPubSub := gochannel.NewGoChannel(gochannel.Config{}, nil)
	t.Cleanup(func() { _ = chanPubSub.Close() })
	other, err := redispubsub.NewEventTarget[recEvent](chanPubSub, chanPubSub)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	_, err = other.AddEventListener(ctx, topic, listener(late), redispubsub.FromPosition(positions[0]))
	require.ErrorIs(t, err, redispubsub.ErrPositionsUnsupported)
}

// A live offset that skips (a message of the history that Pub/Sub never
// brought, here one added to the history without a PUBLISH) starts a read:
// the missing message is delivered from the history, in order, before the
// live one, without a reconnect, and the live one is not delivered twice.
func TestRecoverOffsetThatSkips(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	pub := recPublisher(t, client, 100, nil)
	sub := wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) { c.Recover = true })
	const topic = "rec.skip"
	ch, _ := testutil.Subscribe(t, sub, topic)
	recPublish(t, pub, topic, 0, 1)
	first := recReceive(t, ch, 1)[0]

	// Offset 2 enters the history (a copy of offset 1's record), and no
	// subscriber hears of it.
	ctx := testutil.Context(t)
	list := "rps:hlist:{" + topic + "}"
	require.Equal(t, int64(2), client.HIncrBy(ctx, "rps:hmeta:{"+topic+"}", "s", 1).Val())
	require.NoError(t, client.RPush(ctx, list, client.LIndex(ctx, list, -1).Val()).Err())
	recPublish(t, pub, topic, 1, 1) // offset 3

	msg := testutil.Receive(t, ch)
	assert.Equal(t, "0", msg.UUID, "the copy of message 0")
	pos, ok := redispubsub.PositionOf(msg)
	require.True(t, ok)
	assert.Equal(t, redispubsub.Position{Offset: 2, Epoch: first.Epoch}, pos)
	msg.Ack()
	got := recReceive(t, ch, 1)
	assert.Equal(t, uint64(3), got[0].Offset)
	stats := sub.Stats()
	// The read found offset 3 in the history too (the script appends
	// before it publishes): delivered from there, its live copy dropped.
	assert.Equal(t, uint64(2), stats.Recovered)
	assert.Equal(t, uint64(1), stats.Duplicates)
	assert.Zero(t, stats.Reconnects)
	assert.Zero(t, stats.Unrecovered)
}

// A pattern subscription recovers each channel it matched: after an
// outage, what each missed comes from its history, in its offset order,
// with the concrete topic in the metadata as for live messages, then the
// live ones.
func TestRecoverOnAPatternSubscription(t *testing.T) {
	srv := redistest.Start(t)
	pub := recPublisher(t, srv.NewClient(t), 100, nil)
	sub, proxy, reconnects, _ := recOutageSubscriber(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.SubscribePattern(ctx, "rec.pattern.*")
	require.NoError(t, err)
	const a, b = "rec.pattern.a", "rec.pattern.b"
	recPublish(t, pub, a, 0, 1)
	recPublish(t, pub, b, 0, 1)
	for _, topic := range []string{a, b} {
		msg := testutil.Receive(t, ch)
		assert.Equal(t, topic, msg.Metadata.Get(redispubsub.MetadataTopic), "a live message's topic")
		msg.Ack()
	}
	recOutage(t, proxy, reconnects, func() {
		recPublish(t, pub, a, 1, 5) // offsets 2..6
		recPublish(t, pub, b, 1, 3) // offsets 2..4
	})
	recPublish(t, pub, a, 6, 1)
	recPublish(t, pub, b, 4, 1)
	offsets := map[string][]uint64{}
	for range 10 {
		msg := testutil.Receive(t, ch)
		pos, ok := redispubsub.PositionOf(msg)
		require.True(t, ok)
		topic := msg.Metadata.Get(redispubsub.MetadataTopic)
		offsets[topic] = append(offsets[topic], pos.Offset)
		msg.Ack()
	}
	assert.Equal(t, map[string][]uint64{a: {2, 3, 4, 5, 6, 7}, b: {2, 3, 4, 5}}, offsets)
	// The live copies of a:7 and b:5, when the read found them first, may
	// still be on their way (then dropped as duplicates): one more live
	// message of each follows them on the connection.
	recPublish(t, pub, a, 7, 1)
	recPublish(t, pub, b, 5, 1)
	for range 2 {
		testutil.Receive(t, ch).Ack()
	}
	stats := sub.Stats()
	// 8 missed; a live message that the read found in the history too is
	// recovered, and its live copy dropped as a duplicate.
	assert.Equal(t, uint64(8), stats.Recovered-stats.Duplicates)
	assert.Zero(t, stats.Gaps)
	assert.Zero(t, stats.Unrecovered)
}

// A pattern subscription without Recover counts the gaps of a channel with
// a history by its offsets: what an outage cost, exactly.
func TestHistoryGapsOnAPatternSubscription(t *testing.T) {
	srv := redistest.Start(t)
	pub := recPublisher(t, srv.NewClient(t), 100, nil)
	sub, proxy, reconnects, gaps := recOutageSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) { c.Recover = false })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.SubscribePattern(ctx, "rec.pattern.*")
	require.NoError(t, err)
	const topic = "rec.pattern.a"
	recPublish(t, pub, topic, 0, 1)
	recReceive(t, ch, 1)
	recOutage(t, proxy, reconnects, func() { recPublish(t, pub, topic, 1, 5) }) // offsets 2..6, missed
	recPublish(t, pub, topic, 6, 1)
	got := recReceive(t, ch, 1)
	assert.Equal(t, uint64(7), got[0].Offset)
	ev := testutil.Wait(t, gaps, "the gap")
	assert.Equal(t, redispubsub.GapEvent{Topic: topic, Publisher: got[0].Epoch, First: 2, Last: 6}, ev)
	assert.Equal(t, uint64(5), sub.Stats().Gaps)
	assert.Zero(t, sub.Stats().Recovered)
}
