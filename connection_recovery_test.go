package redispubsub

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// While a history read runs, the channel's live messages are held, and
// spend BufferBytes (SubscriberStats.BufferedBytes counts them); those that
// would exceed it are left to one more read. The read delivers everything
// after the last offset routed at once, so with a BufferBytes this small
// most of it is lost by Overflow: every message is delivered in offset
// order or counted in Dropped, none is unrecovered, and nothing held stays
// counted.
func TestRecoveryHoldsWithinBufferBytes(t *testing.T) {
	reads := newReadCounter()
	const bufferBytes = 2048
	pub, sub, client := recoveryPubSub(t, 1000, reads, func(c *SubscriberConfig) { c.BufferBytes = bufferBytes })
	t.Cleanup(reads.release) // before the Subscriber's Close, when the test failed half way
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, "held")
	require.NoError(t, err)
	publish := func(n int) {
		require.NoError(t, pub.Publish("held", message.NewMessage(strconv.Itoa(n), []byte(`{"n":`+strconv.Itoa(n)+`}`))))
	}
	publish(1)
	testutil.Receive(t, ch).Ack()

	// Offset 2 enters the history alone: offset 3 then skips, and starts a
	// read, which waits at the gate while 50 more arrive live.
	skipOffset(t, ctx, client, "held")
	publish(3)
	testutil.Wait(t, reads.entered, "the history read")
	for n := 4; n <= 53; n++ {
		publish(n)
	}
	// Received counts a body before it is held: the last one is held (or
	// not) just after.
	testutil.Eventually(t, func() bool { return sub.Stats().Received == 52 }, "every live message read")
	testutil.Eventually(t, func() bool { return sub.Stats().BufferedBytes > bufferBytes*3/4 }, "held up to BufferBytes")
	assert.LessOrEqual(t, sub.Stats().BufferedBytes, int64(bufferBytes), "what is held stays within BufferBytes")
	reads.release()

	// Everything after offset 1 is delivered or dropped (counted), once.
	var mu sync.Mutex
	var offsets []uint64
	go func() {
		for msg := range ch {
			pos, _ := PositionOf(msg)
			mu.Lock()
			offsets = append(offsets, pos.Offset)
			mu.Unlock()
			msg.Ack()
		}
	}()
	delivered := func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(offsets)
	}
	testutil.Eventually(t, func() bool { return uint64(len(delivered()))+sub.Stats().Dropped == 52 }, "every message delivered or dropped")
	got := delivered()
	assert.True(t, slices.IsSorted(got), "%v", got)
	require.NotEmpty(t, got)
	assert.Equal(t, uint64(2), got[0])
	stats := sub.Stats()
	assert.Zero(t, stats.Unrecovered)
	// The one more read (the messages not held) ends, and routes what was.
	testutil.Eventually(t, func() bool { return sub.Stats().BufferedBytes == 0 }, "nothing held")
	assert.Equal(t, uint64(52), uint64(len(delivered()))+sub.Stats().Dropped)
	cancel()
}

// At most maxHistoryReadsAtOnce history reads of a Subscriber run at once:
// when every channel of a pattern skips an offset together, their histories
// are read that many at a time, and every channel recovers.
func TestHistoryReadsAtOnceAreBounded(t *testing.T) {
	reads := newReadCounter()
	pub, sub, client := recoveryPubSub(t, 100, reads, nil)
	t.Cleanup(reads.release) // before the Subscriber's Close, when the test failed half way
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.SubscribePattern(ctx, "many.*")
	require.NoError(t, err)

	const channels = 3 * maxHistoryReadsAtOnce
	topic := func(i int) string { return "many." + strconv.Itoa(i) }
	for i := range channels {
		require.NoError(t, pub.Publish(topic(i), message.NewMessage("first", []byte(`{}`))))
	}
	for range channels {
		testutil.Receive(t, ch).Ack()
	}
	// Offset 2 of every channel enters its history alone: offset 3 skips.
	for i := range channels {
		skipOffset(t, ctx, client, topic(i))
		require.NoError(t, pub.Publish(topic(i), message.NewMessage("third", []byte(`{}`))))
	}
	for range maxHistoryReadsAtOnce {
		testutil.Wait(t, reads.entered, "a history read")
	}
	testutil.Eventually(t, func() bool { return sub.Stats().Received == 2*channels }, "every skip read")
	reads.release()

	offsets := offsetsByTopic(t, ch, 2*channels)
	for i := range channels {
		assert.Equal(t, []uint64{2, 3}, offsets[topic(i)], topic(i))
	}
	assert.Equal(t, maxHistoryReadsAtOnce, reads.most(), "history reads at once")
	stats := sub.Stats()
	assert.Equal(t, uint64(2*channels), stats.Recovered)
	assert.Zero(t, stats.Unrecovered)
	cancel()
}

// A pattern subscription follows the histories of maxRecoveredChannels of
// the channels it matched; the messages of a channel past them are
// delivered as they come, neither recovered nor counted as gaps, while the
// channels within still recover.
func TestRecoveredChannelsOfAPatternAreBounded(t *testing.T) {
	pub, sub, client := recoveryPubSub(t, 10, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.SubscribePattern(ctx, "wide.*")
	require.NoError(t, err)

	// Published one after the other, so that they arrive in this order:
	// the last channel is the one past the bound.
	topic := func(i int) string { return "wide." + strconv.Itoa(i) }
	for i := range maxRecoveredChannels + 1 {
		require.NoError(t, pub.Publish(topic(i), message.NewMessage("first", []byte(`{}`))))
	}
	for range maxRecoveredChannels + 1 {
		testutil.Receive(t, ch).Ack()
	}
	within, past := topic(0), topic(maxRecoveredChannels)
	for _, name := range []string{within, past} {
		skipOffset(t, ctx, client, name)
		require.NoError(t, pub.Publish(name, message.NewMessage("third", []byte(`{}`))))
	}
	assert.Equal(t, map[string][]uint64{within: {2, 3}, past: {3}}, offsetsByTopic(t, ch, 3))
	stats := sub.Stats()
	assert.Equal(t, uint64(2), stats.Recovered)
	assert.Zero(t, stats.Gaps)
	assert.Zero(t, stats.Unrecovered)
	cancel()
}

// recoveryPubSub starts a server with a Publisher keeping a history of
// size and a Subscriber with Recover, whose client has hook when it is not
// nil and whose config configure adjusts; both are closed at the end of the
// test. client is for the test's own commands.
func recoveryPubSub(t *testing.T, size int, hook redis.Hook, configure func(*SubscriberConfig)) (pub *Publisher, sub *Subscriber, client *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	pub, err := NewPublisher(PublisherConfig{Client: srv.NewClient(t), History: History{Size: size}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	readClient := srv.NewClient(t)
	if hook != nil {
		readClient.AddHook(hook)
	}
	config := SubscriberConfig{Client: readClient, Recover: true}
	if configure != nil {
		configure(&config)
	}
	sub, err = NewSubscriber(config, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	return pub, sub, srv.NewClient(t)
}

// offsetsByTopic receives n messages of a pattern subscription, Acks them,
// and returns their offsets by topic, in the order they came.
func offsetsByTopic(t *testing.T, ch <-chan *message.Message, n int) map[string][]uint64 {
	t.Helper()
	offsets := map[string][]uint64{}
	for range n {
		msg := testutil.Receive(t, ch)
		pos, ok := PositionOf(msg)
		require.True(t, ok)
		name := msg.Metadata.Get(MetadataTopic)
		offsets[name] = append(offsets[name], pos.Offset)
		msg.Ack()
	}
	return offsets
}

// skipOffset puts the next offset of channel's history in it without
// publishing it (a copy of its last record): the next message published
// skips it.
func skipOffset(t *testing.T, ctx context.Context, client redis.UniversalClient, channel string) {
	t.Helper()
	list, meta, err := historyKeys(channel)
	require.NoError(t, err)
	require.NoError(t, client.HIncrBy(ctx, meta, "s", 1).Err())
	require.NoError(t, client.RPush(ctx, list, client.LIndex(ctx, list, -1).Val()).Err())
}

// readCounter is a go-redis hook that holds every history read (a
// transaction with an LRANGE) until open is closed, saying so on entered,
// and keeps the most that waited at once.
type readCounter struct {
	entered chan struct{}
	open    chan struct{}
	release func() // closes open, once

	mu        sync.Mutex
	now, peak int
}

func newReadCounter() *readCounter {
	c := &readCounter{entered: make(chan struct{}, 1024), open: make(chan struct{})}
	c.release = sync.OnceFunc(func() { close(c.open) })
	return c
}

func (c *readCounter) most() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak
}

func (c *readCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *readCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (c *readCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "lrange" }) {
			return next(ctx, cmds)
		}
		c.mu.Lock()
		c.now++
		c.peak = max(c.peak, c.now)
		c.mu.Unlock()
		c.entered <- struct{}{}
		<-c.open
		c.mu.Lock()
		c.now--
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}
