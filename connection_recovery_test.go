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
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	pub, err := NewPublisher(PublisherConfig{Client: srv.NewClient(t), History: History{Size: 1000}}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	readClient := srv.NewClient(t)
	gate := newReadGate()
	readClient.AddHook(gate)
	const bufferBytes = 2048
	sub, err := NewSubscriber(SubscriberConfig{Client: readClient, Recover: true, BufferBytes: bufferBytes}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, "held")
	require.NoError(t, err)
	publish := func(n int) {
		require.NoError(t, pub.Publish("held", message.NewMessage(strconv.Itoa(n), []byte(`{"n":`+strconv.Itoa(n)+`}`))))
	}
	publish(1)
	testutil.Receive(t, ch).Ack()

	// Offset 2 enters the history alone (a copy of offset 1's record):
	// offset 3 then skips, and starts a read, which waits at the gate while
	// 50 more arrive live.
	list, meta, err := historyKeys("held")
	require.NoError(t, err)
	require.Equal(t, int64(2), client.HIncrBy(ctx, meta, "s", 1).Val())
	require.NoError(t, client.RPush(ctx, list, client.LIndex(ctx, list, -1).Val()).Err())
	publish(3)
	testutil.Wait(t, gate.waiting, "the history read")
	for n := 4; n <= 53; n++ {
		publish(n)
	}
	// Received counts a body before it is held: the last one is held (or
	// not) just after.
	testutil.Eventually(t, func() bool { return sub.Stats().Received == 52 }, "every live message read")
	testutil.Eventually(t, func() bool { return sub.Stats().BufferedBytes > bufferBytes*3/4 }, "held up to BufferBytes")
	assert.LessOrEqual(t, sub.Stats().BufferedBytes, int64(bufferBytes), "what is held stays within BufferBytes")
	close(gate.open)

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

// readGate is a go-redis hook that holds the first history read (a
// transaction with an LRANGE) until open is closed, saying so on waiting.
type readGate struct {
	waiting chan struct{}
	open    chan struct{}
	first   bool
}

func newReadGate() *readGate {
	return &readGate{waiting: make(chan struct{}), open: make(chan struct{}), first: true}
}

func (g *readGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *readGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (g *readGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if g.first && slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "lrange" }) {
			g.first = false
			close(g.waiting)
			<-g.open
		}
		return next(ctx, cmds)
	}
}
