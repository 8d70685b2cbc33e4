package tests

// Sharded Pub/Sub (SSUBSCRIBE / SPUBLISH) on a Redis Cluster of 3 masters
// with a replica each: many topics over the shards, a slot migrated, a
// master failed over by CLUSTER FAILOVER and one killed, while messages flow.
// And classic Pub/Sub through Sentinel, its master killed.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

const shardPrefix = "sh:"

// stampedPublisher publishes numbered, stamped envelopes with SPUBLISH (or
// PUBLISH) through any client, as a sharded Publisher does; a number is
// retried until Redis takes it, so that every number is published once or
// more.
type stampedPublisher struct {
	client  redis.UniversalClient
	sharded bool
	id      string

	mu   sync.Mutex
	next map[string]uint64
}

func newStampedPublisher(client redis.UniversalClient, sharded bool) *stampedPublisher {
	return &stampedPublisher{client: client, sharded: sharded, id: "test-publisher", next: make(map[string]uint64)}
}

// publish sends the next number on topic, retrying until Redis took it, ctx
// ends or testutil.Timeout passed; it returns the number.
func (p *stampedPublisher) publish(ctx context.Context, topic string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, testutil.Timeout)
	defer cancel()
	p.mu.Lock()
	p.next[topic]++
	seq := p.next[topic]
	p.mu.Unlock()
	msg := message.NewMessage("m-"+strconv.FormatUint(seq, 10), []byte(fmt.Sprintf(`{"n":%d}`, seq)))
	msg.Metadata.Set(redispubsub.MetadataPublisher, p.id)
	msg.Metadata.Set(redispubsub.MetadataSequence, strconv.FormatUint(seq, 10))
	body, err := redispubsub.JSONEnvelopeMarshaler{}.Marshal(topic, msg)
	if err != nil {
		return 0, err
	}
	for {
		if p.sharded {
			err = p.client.SPublish(ctx, shardPrefix+topic, body).Err()
		} else {
			err = p.client.Publish(ctx, shardPrefix+topic, body).Err()
		}
		if err == nil || ctx.Err() != nil {
			return seq, err
		}
		if cluster, ok := p.client.(*redis.ClusterClient); ok {
			cluster.ReloadState(ctx) // a master may have been replaced
		}
		select { // the cluster is moving a slot or electing a master
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return seq, ctx.Err()
		}
	}
}

// seqConsumer records the numbers a subscription receives, in order.
type seqConsumer struct {
	mu       sync.Mutex
	got      []uint64
	received chan uint64
}

func consumeSeqs(ch <-chan *message.Message) *seqConsumer {
	c := &seqConsumer{received: make(chan uint64, 1<<16)}
	go func() {
		for msg := range ch {
			var p struct{ N uint64 }
			_ = json.Unmarshal(msg.Payload, &p)
			c.mu.Lock()
			c.got = append(c.got, p.N)
			c.mu.Unlock()
			select {
			case c.received <- p.N:
			default:
			}
			msg.Ack()
		}
	}()
	return c
}

func (c *seqConsumer) numbers() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.got...)
}

// waitFor waits until the consumer received number n or more.
func (c *seqConsumer) waitFor(t testing.TB, n uint64) {
	t.Helper()
	timeout := time.After(testutil.Timeout)
	for {
		select {
		case got := <-c.received:
			if got >= n {
				return
			}
		case <-timeout:
			t.Fatalf("number %d never arrived; got %d numbers", n, len(c.numbers()))
		}
	}
}

// checkStream checks that got is increasing, and that what is missing of 1
// to last equals the gaps the Subscriber counted.
func checkStream(t testing.TB, got []uint64, last uint64, gaps uint64) {
	t.Helper()
	for i := 1; i < len(got); i++ {
		require.Less(t, got[i-1], got[i], "delivered in order, nothing twice")
	}
	require.Equal(t, last-uint64(len(got)), gaps, "what was lost equals the gaps counted (got %d of %d)", len(got), last)
}

func TestSharded(t *testing.T) {
	cluster := redistest.StartClusterOptions(t, redisproc.ClusterOptions{Masters: 3, Replicas: 1})
	client := cluster.NewClient(t)
	pub := newStampedPublisher(client, true)
	reconnects := make(chan redispubsub.ReconnectEvent, 64)
	sub := wmSubscriber(t, nil, func(c *redispubsub.SubscriberConfig) {
		c.Client, c.Sharded, c.ChannelPrefix = client, true, shardPrefix
		c.OnReconnect = func(ev redispubsub.ReconnectEvent) { reconnects <- ev }
	})
	ctx := context.Background()

	t.Run("1000 topics over 3 masters", func(t *testing.T) {
		const topics = 1000
		consumers := make([]*seqConsumer, topics)
		testutil.Parallel(t, topics, topics, func(i int) error {
			ch, err := sub.Subscribe(ctx, fmt.Sprintf("t.%d", i))
			if err != nil {
				return err
			}
			consumers[i] = consumeSeqs(ch)
			return nil
		})
		for round := range 3 {
			for i := range topics {
				_, err := pub.publish(ctx, fmt.Sprintf("t.%d", i))
				require.NoError(t, err, "round %d", round)
			}
		}
		owners := map[string]int{}
		for i, c := range consumers {
			c.waitFor(t, 3)
			require.Equal(t, []uint64{1, 2, 3}, c.numbers())
			if i%100 == 0 {
				channel := fmt.Sprintf("%st.%d", shardPrefix, i)
				owner := cluster.ChannelOwner(t, channel)
				owners[owner.Addr()]++
				require.EqualValues(t, 1, testutil.ShardNumsub(t, owner, channel), "SHARDNUMSUB of %s on its owner", channel)
				for _, node := range cluster.Nodes() {
					require.Zero(t, testutil.Numsub(t, node, channel), "classic NUMSUB")
				}
			}
		}
		require.Len(t, owners, 3, "the topics are spread over the 3 masters")
		require.Zero(t, sub.Stats().Gaps)
	})

	// Each node connection has its probe channel in a slot of its node
	// (SSUBSCRIBE there, SPUBLISH through the cluster client): every
	// connection receives probes, and the Subscriber is ready.
	t.Run("liveness probes on every node connection", func(t *testing.T) {
		for i := range 30 { // over the 3 masters
			testutil.Subscribe(t, sub, fmt.Sprintf("probed.%d", i))
		}
		testutil.Eventually(t, func() bool { return sub.Health(ctx) == nil }, "every node connection probed")
		require.GreaterOrEqual(t, sub.Stats().ProbesReceived, uint64(3))
		require.Zero(t, sub.Stats().DeafConnections)
		for _, master := range cluster.Masters(t) {
			probes, ok := master.Do(t, "PUBSUB", "SHARDCHANNELS", shardPrefix+redispubsub.ProbeTopicPrefix+"*").([]any)
			require.True(t, ok)
			require.Len(t, probes, 1, "one probe channel on %s", master.Addr())
			require.Equal(t, master, cluster.ChannelOwner(t, probes[0].(string)), "the probe channel's slot is its node's")
		}
	})

	// follow runs a flow of numbers on topic while fault runs, then checks
	// that delivery resumed and that the loss equals the gaps.
	follow := func(t *testing.T, topic string, fault func(channel string)) {
		gapsBefore := sub.Stats().Gaps
		ch, cancel := testutil.Subscribe(t, sub, topic)
		c := consumeSeqs(ch)
		flowCtx, stopFlow := context.WithCancel(ctx)
		var last uint64
		flowed := make(chan error, 1)
		go func() {
			for flowCtx.Err() == nil {
				n, err := pub.publish(flowCtx, topic)
				if err != nil {
					flowed <- nil
					return
				}
				last = n
				time.Sleep(2 * time.Millisecond)
			}
			flowed <- nil
		}()
		c.waitFor(t, 20)
		faultAt := time.Now()
		fault(shardPrefix + topic)
		faulted := time.Now()
		p, _ := pub.publish(ctx, topic)
		c.waitFor(t, p)
		t.Logf("fault took %v; delivery resumed %v after it", faulted.Sub(faultAt).Round(time.Millisecond), time.Since(faulted).Round(time.Millisecond))
		stopFlow()
		testutil.Wait(t, flowed, "the flow to stop")
		marker, err := pub.publish(ctx, topic)
		require.NoError(t, err)
		c.waitFor(t, marker)
		require.GreaterOrEqual(t, marker, last)
		cancel()
		testutil.Eventually(t, func() bool { return len(c.numbers()) > 0 })
		checkStream(t, c.numbers(), marker, sub.Stats().Gaps-gapsBefore)
	}

	t.Run("slot migrated", func(t *testing.T) {
		follow(t, "moving", func(channel string) {
			from := cluster.ChannelOwner(t, channel)
			var to *redistest.Server
			for _, m := range cluster.Masters(t) {
				if m.Addr() != from.Addr() {
					to = m
					break
				}
			}
			cluster.MigrateSlot(t, redisproc.KeySlot(channel), to)
			require.Equal(t, to.Addr(), cluster.ChannelOwner(t, channel).Addr())
		})
	})
	t.Run("CLUSTER FAILOVER", func(t *testing.T) {
		follow(t, "failover", func(channel string) {
			cluster.Failover(t, cluster.ChannelOwner(t, channel))
		})
	})
	t.Run("master killed", func(t *testing.T) {
		follow(t, "killed", func(channel string) {
			cluster.KillMaster(t, cluster.ChannelOwner(t, channel))
		})
	})
}

// Sharded mode refuses SubscribePattern with a clear error, and works on a
// single server (Redis 7 takes SSUBSCRIBE there).
func TestShardedOnASingleServer(t *testing.T) {
	srv := redistest.Start(t)
	client := srv.NewClient(t)
	sub := wmSubscriber(t, srv, func(c *redispubsub.SubscriberConfig) { c.Sharded, c.ChannelPrefix = true, shardPrefix })
	_, err := sub.SubscribePattern(context.Background(), "t.*")
	require.ErrorIs(t, err, redispubsub.ErrShardedPattern)
	ch, _ := testutil.Subscribe(t, sub, "single")
	c := consumeSeqs(ch)
	pub := newStampedPublisher(client, true)
	n, err := pub.publish(context.Background(), "single")
	require.NoError(t, err)
	c.waitFor(t, n)
	require.EqualValues(t, 1, testutil.ShardNumsub(t, srv, shardPrefix+"single"))
}

// The Subscriber on a Sentinel failover client: the master killed, Sentinel
// promotes the replica, and delivery resumes by itself; what was lost meanwhile
// is counted in the gaps.
func TestSentinelFailover(t *testing.T) {
	sentinel := redistest.StartSentinel(t, redisproc.SentinelOptions{})
	client := sentinel.NewFailoverClient(t)
	pub := newStampedPublisher(client, false)
	sub := wmSubscriber(t, nil, func(c *redispubsub.SubscriberConfig) {
		c.Client, c.ChannelPrefix = sentinel.NewFailoverClient(t), shardPrefix
	})
	ch, cancel := testutil.Subscribe(t, sub, "ha")
	c := consumeSeqs(ch)
	ctx := context.Background()
	for range 10 {
		_, err := pub.publish(ctx, "ha")
		require.NoError(t, err)
	}
	c.waitFor(t, 10)
	killedAt := time.Now()
	promoted := sentinel.KillMaster(t)
	t.Logf("Sentinel promoted %s after %v", promoted.Addr(), time.Since(killedAt).Round(time.Millisecond))
	// The Subscriber resubscribes at the new master; until Redis confirmed
	// it, what is published there is lost (and counted).
	var last uint64
	testutil.Eventually(t, func() bool {
		n, err := pub.publish(ctx, "ha")
		require.NoError(t, err)
		last = n
		select {
		case got := <-c.received:
			return got > 10
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}, "delivery resumed")
	t.Logf("delivery resumed %v after the kill", time.Since(killedAt).Round(time.Millisecond))
	marker, err := pub.publish(ctx, "ha")
	require.NoError(t, err)
	c.waitFor(t, marker)
	require.Greater(t, marker, last)
	cancel()
	checkStream(t, c.numbers(), marker, sub.Stats().Gaps)
	require.NotZero(t, sub.Stats().Reconnects)
}
