package tests

// Regression tests of the guarantees of the Subscriber's connections in
// sharded mode that issues 16 and 17 found broken: a plain client pointed at
// one node of a cluster, a Subscribe/cancel storm over three masters,
// credentials that only a provider gives, and a SubscribeInitialize'd topic
// taken over while its slot migrates. Helpers start with "cg" (see
// connection_guarantees_test.go).

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/auth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/redistest/redisproc"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// cgTopicOn returns a topic named base.<k> whose channel (cgPrefix + topic)
// hashes to a slot of master i of a fresh cluster of masters masters, and
// not to the slot of any topic in avoid.
func cgTopicOn(base string, i, masters int, avoid ...string) string {
	first, last := i*redisproc.SlotCount/masters, (i+1)*redisproc.SlotCount/masters-1
	taken := map[int]bool{}
	for _, topic := range avoid {
		taken[redisproc.KeySlot(cgPrefix+topic)] = true
	}
	for k := 0; ; k++ {
		topic := fmt.Sprintf("%s.%d", base, k)
		slot := redisproc.KeySlot(cgPrefix + topic)
		if slot >= first && slot <= last && !taken[slot] {
			return topic
		}
	}
}

// cgShardedSubscriber returns a sharded Subscriber of client with cgPrefix,
// closed at the end of the test.
func cgShardedSubscriber(t testing.TB, client redis.UniversalClient, configure func(*redispubsub.SubscriberConfig)) *redispubsub.Subscriber {
	t.Helper()
	config := redispubsub.SubscriberConfig{Client: client, ChannelPrefix: cgPrefix, Sharded: true}
	if configure != nil {
		configure(&config)
	}
	return faultSubscriber(t, config, newFaultLog(t))
}

// cgPublishReceive publishes one message on topic and receives it on ch.
func cgPublishReceive(t testing.TB, pub *redispubsub.Publisher, topic string, ch <-chan *message.Message) {
	t.Helper()
	msg := message.NewMessage(topic+"-"+time.Now().Format(time.RFC3339Nano), []byte(`{}`))
	require.NoError(t, pub.Publish(topic, msg))
	got := testutil.Receive(t, ch)
	require.Equal(t, msg.UUID, got.UUID, topic)
	got.Ack()
}

// Sharded mode on a plain *redis.Client pointed at one node of a cluster
// (the README says sharded mode works on a single server): a Subscribe of a
// channel whose slot another node owns fails at once, with an error that
// names Redis's MOVED, not after SubscribeTimeout, and the channels the
// node owns go on. This is the behaviour tested, rather than following the
// MOVED: the user's client names one server, and the Subscriber connects
// where the client says. (The bug: the MOVED reply sent the channel to the
// slot mover, which reloads a slot map that only a *redis.ClusterClient
// has: a nil pointer panic that ended the process, 2 of 2 trials.)
func TestShardedOnOneClusterNodeRefusesAChannelOfAnotherNode(t *testing.T) {
	cluster := redistest.StartCluster(t, 2)
	node := cluster.Nodes()[0]
	local, foreign := cgTopicOn("local", 0, 2), cgTopicOn("foreign", 1, 2)
	require.Equal(t, node.Addr(), cluster.ChannelOwner(t, cgPrefix+local).Addr())
	sub := cgShardedSubscriber(t, faultClient(t, node.Addr(), nil), func(c *redispubsub.SubscriberConfig) {
		c.SubscribeTimeout = time.Minute
	})
	pub := cgPublisher(t, cluster.NewClient(t), true)
	ch, _ := testutil.Subscribe(t, sub, local)
	cgPublishReceive(t, pub, local, ch)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := sub.Subscribe(ctx, foreign)
	took := time.Since(start)
	t.Logf("Subscribe of a channel of another node returned after %v: %v", took.Round(time.Millisecond), err)
	require.Error(t, err)
	require.NotErrorIs(t, err, redispubsub.ErrSubscribeTimeout)
	require.NotErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "MOVED")
	require.Less(t, took, 5*time.Second)
	cgPublishReceive(t, pub, local, ch)
	require.Zero(t, sub.Stats().Reconnects)
}

// The same Subscriber (a plain client on one cluster node) when the slot of
// a subscribed channel migrates to another node: Redis ends the sharded
// subscription (an unsolicited SUNSUBSCRIBE). The process survives, the
// subscription either ends (its output channel closes) or follows the slot
// (a message published at the new owner arrives), and the node's other
// channel goes on. (The bug: the same nil slot map panic as for a MOVED, 2
// of 2 trials.)
func TestShardedOnOneClusterNodeSurvivesASlotMigratedAway(t *testing.T) {
	cluster := redistest.StartCluster(t, 2)
	nodes := cluster.Nodes()
	moving := cgTopicOn("moving", 0, 2)
	staying := cgTopicOn("staying", 0, 2, moving)
	sub := cgShardedSubscriber(t, faultClient(t, nodes[0].Addr(), nil), nil)
	pub := cgPublisher(t, cluster.NewClient(t), true)
	movingCh, _ := testutil.Subscribe(t, sub, moving)
	stayingCh, _ := testutil.Subscribe(t, sub, staying)
	cgPublishReceive(t, pub, moving, movingCh)
	cgPublishReceive(t, pub, staying, stayingCh)

	cluster.MigrateSlot(t, redisproc.KeySlot(cgPrefix+moving), nodes[1])
	outcome := ""
	testutil.Eventually(t, func() bool {
		require.NoError(t, pub.Publish(moving, message.NewMessage("after", []byte(`{}`))))
		wait := time.NewTimer(100 * time.Millisecond)
		defer wait.Stop()
		select {
		case msg, ok := <-movingCh:
			if !ok {
				outcome = "ended"
				return true
			}
			msg.Ack()
			if msg.UUID == "after" {
				outcome = "followed"
				return true
			}
			return false
		case <-wait.C:
			return false
		}
	}, "the migrated channel's subscription ends or follows")
	t.Logf("the subscription of the migrated channel %s; stats %+v", outcome, sub.Stats())
	cgPublishReceive(t, pub, staying, stayingCh)
}

// A Subscribe/cancel storm in sharded mode on a cluster of 3 masters
// (rounds of 3,000 calls over 300 topics from 64 goroutines, contexts ended at random
// moments, Subscribe running included) leaves, once every subscription
// ended, no shard channel subscribed on any node (PUBSUB SHARDCHANNELS) and
// no node connection open (CLIENT LIST TYPE pubsub), and a message published
// to those topics later reaches nobody and is not counted as Discarded.
// (The bug, as in classic mode: 2-5 shard channels stayed subscribed and 2-3
// node connections open.)
func TestShardedSubscribeCancelStormLeavesNothingSubscribed(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	client := cluster.NewClient(t)
	sub := cgShardedSubscriber(t, client, nil)
	pub := cgPublisher(t, client, true)
	masters := cluster.Nodes()
	topics := cgStormTopics(300)

	left := cgStormRounds(t, sub, topics, func() []string {
		var held []string
		for _, node := range masters {
			for _, channel := range cgChannels(t, node, true) {
				held = append(held, node.Addr()+" "+channel)
			}
			if list := strings.TrimSpace(node.Do(t, "CLIENT", "LIST", "TYPE", "pubsub").(string)); list != "" {
				held = append(held, fmt.Sprintf("%s %d connections", node.Addr(), len(strings.Split(list, "\n"))))
			}
		}
		return held
	})
	assert.Empty(t, left, "shard channels subscribed or node connections open 10s after every subscription ended")

	discarded, noSubscribers := sub.Stats().Discarded, pub.Stats().NoSubscribers
	for _, topic := range topics {
		require.NoError(t, pub.Publish(topic, message.NewMessage("late", []byte(`{}`))))
	}
	// Each node connection reads in order: once a message published on
	// every node after those arrived, the Subscriber read them all.
	for i := range masters {
		marker := cgTopicOn("marker", i, len(masters))
		ch, _ := testutil.Subscribe(t, sub, marker)
		cgPublishReceive(t, pub, marker, ch)
	}
	assert.Equal(t, uint64(len(topics)), pub.Stats().NoSubscribers-noSubscribers, "the later messages reached no subscriber")
	assert.Zero(t, sub.Stats().Discarded-discarded, "later messages to ended subscriptions counted as Discarded")
}

// cgStreamingCredentials is an auth.StreamingCredentialsProvider that gives
// the same password for ever.
type cgStreamingCredentials struct{ password string }

func (p cgStreamingCredentials) Subscribe(auth.CredentialsListener) (auth.Credentials, auth.UnsubscribeFunc, error) {
	return auth.NewBasicCredentials("default", p.password), func() error { return nil }, nil
}

// A *redis.ClusterClient whose credentials only CredentialsProviderContext,
// or only StreamingCredentialsProvider, gives, on a cluster that requires a
// password: sharded Subscribe works on every master and delivers. (The bug:
// the Subscriber's node clients copied 13 of the cluster client's options
// by hand, no credentials provider among them: Redis refused them (NOAUTH)
// and Subscribe failed after SubscribeTimeout, 3 of 3; classic mode
// worked.)
func TestShardedSubscribeWithCredentialsFromAProvider(t *testing.T) {
	const password = "cg-secret"
	cluster := redistest.StartCluster(t, 3)
	masters := cluster.Nodes()
	for _, node := range masters {
		// After the harness set the cluster up: it runs as the default
		// user without a password.
		node.Do(t, "CONFIG", "SET", "masterauth", password)
		node.Do(t, "CONFIG", "SET", "requirepass", password)
	}
	providers := map[string]func(*redis.ClusterOptions){
		"CredentialsProviderContext": func(o *redis.ClusterOptions) {
			o.CredentialsProviderContext = func(context.Context) (string, string, error) { return "", password, nil }
		},
		"StreamingCredentialsProvider": func(o *redis.ClusterOptions) {
			o.StreamingCredentialsProvider = cgStreamingCredentials{password: password}
		},
	}
	for name, provide := range providers {
		t.Run(name, func(t *testing.T) {
			opts := &redis.ClusterOptions{Addrs: cluster.Addrs()}
			provide(opts)
			client := redis.NewClusterClient(opts)
			t.Cleanup(func() { _ = client.Close() })
			sub := cgShardedSubscriber(t, client, func(c *redispubsub.SubscriberConfig) { c.SubscribeTimeout = 5 * time.Second })
			pub := cgPublisher(t, client, true)
			for i := range masters {
				topic := cgTopicOn("auth", i, len(masters))
				// SubscribeTimeout bounds the Subscribe; the context ends
				// the subscription with the test.
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				start := time.Now()
				ch, err := sub.Subscribe(ctx, topic)
				require.NoError(t, err, "sharded Subscribe of %s (master %d) after %v", topic, i, time.Since(start).Round(time.Millisecond))
				cgPublishReceive(t, pub, topic, ch)
			}
		})
	}
}

// A topic that SubscribeInitialize subscribed, taken over by Subscribe
// after its slot migrated to another master and the slot mover moved the
// subscription there, three times: under -race, no data race, the held
// message is delivered, and so is one published at the new owner. (The
// bug: subscription.attach wrote consumerCtx without the lock under which
// isDone, called by the slot mover, reads it.)
//
// Between the move and the Subscribe the test must do nothing that orders
// the mover's steps before its own for the race detector: no logger that
// writes to the test, and no read from a socket (the race detector takes
// every read from a file or socket for synchronisation with every earlier
// write to one: package syscall's ioSync; the Subscriber writes to Redis
// right after the move). So the test migrates the slot itself, as
// Cluster.MigrateSlot does without its wait for the cluster to settle, and
// lets the mover work while it does nothing.
func TestInitializedTopicTakenOverAfterItsSlotMigrated(t *testing.T) {
	cluster := redistest.StartCluster(t, 2)
	client := cluster.NewClient(t)
	sub := faultSubscriber(t, redispubsub.SubscriberConfig{
		Client: client, ChannelPrefix: cgPrefix, Sharded: true,
	}, watermill.NopLogger{})
	pub := cgPublisher(t, client, true)
	masters := cluster.Nodes()
	// A Subscribe first: on main, SubscribeInitialize as a sharded
	// Subscriber's first call fails (TestShardedSubscribeInitializeFirst).
	testutil.Subscribe(t, sub, "init.warm")
	for i := range 3 {
		topic := fmt.Sprintf("init.%d", i)
		channel := cgPrefix + topic
		slot := redisproc.KeySlot(channel)
		require.NoError(t, sub.SubscribeInitialize(topic))
		require.NoError(t, pub.Publish(topic, message.NewMessage("held", []byte(`{}`))))
		from, to := masters[0], masters[1]
		if cluster.ChannelOwner(t, channel).Addr() == to.Addr() {
			from, to = to, from
		}
		// The slot holds no key: IMPORTING, MIGRATING, then NODE on the
		// new owner and on the old one.
		to.Do(t, "CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.NodeID(from))
		from.Do(t, "CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.NodeID(to))
		for _, node := range []*redistest.Server{to, from} {
			node.Do(t, "CLUSTER", "SETSLOT", slot, "NODE", cluster.NodeID(to))
		}
		// Redis ended the subscription at the old owner; the slot mover
		// takes it to the new one within milliseconds. The test waits
		// without reading a socket (see above): this wait gives the mover
		// its time, it synchronises nothing, and the test checks the
		// move below.
		<-time.After(300 * time.Millisecond)

		ch, cancel := testutil.Subscribe(t, sub, topic)
		testutil.Eventually(t, func() bool { return testutil.ShardNumsub(t, to, channel) == 1 },
			"the subscription of %s moved to its new owner", topic)
		msg := testutil.Receive(t, ch)
		require.Equal(t, "held", msg.UUID, "the message SubscribeInitialize held")
		msg.Ack()
		got := cgReceiveUntil(t, ch, "after", func(msg *message.Message) error { return pub.Publish(topic, msg) })
		t.Logf("%s: received %v after the migration", topic, got)
		cancel()
		testutil.RequireClosed(t, ch)
		cluster.WaitOK(t)
	}
}

// SubscribeInitialize as the first call of a sharded Subscriber on a
// cluster subscribes, and holds what is published for the first Subscribe.
// (The bug, found on the way: it failed with "the cluster's slot map is
// not loaded": only Subscribe loaded it.)
func TestShardedSubscribeInitializeFirst(t *testing.T) {
	cluster := redistest.StartCluster(t, 2)
	client := cluster.NewClient(t)
	sub := cgShardedSubscriber(t, client, nil)
	pub := cgPublisher(t, client, true)
	require.NoError(t, sub.SubscribeInitialize("first"))
	require.NoError(t, pub.Publish("first", message.NewMessage("held", []byte(`{}`))))
	ch, _ := testutil.Subscribe(t, sub, "first")
	msg := testutil.Receive(t, ch)
	require.Equal(t, "held", msg.UUID)
	msg.Ack()
}
