package redispubsub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
	"github.com/alkdev/watermill-redispubsub/internal/testutil"
)

// In sharded mode on one server the Publisher sends SPUBLISH, which a raw
// SSUBSCRIBE receives, and no PUBLISH.
func TestPublishShardedOnSingleServer(t *testing.T) {
	srv := redistest.Start(t)
	ps := rawSSubscribe(t, srv.Addr(), "t")
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: srv.NewClient(t), Sharded: true}, nil)
	require.NoError(t, err)
	defer pub.Close()

	require.NoError(t, pub.Publish("t", jsonMsg(0), jsonMsg(1)))
	require.NoError(t, pub.Publish("t", jsonMsg(2)))
	for i := range 3 {
		require.Equal(t, i, rawN(t, receiveRaw(t, ps)))
	}
	require.EqualValues(t, 3, commandCalls(t, srv, "spublish"))
	require.Zero(t, commandCalls(t, srv, "publish"))
	require.Equal(t, redispubsub.PublisherStats{Published: 3}, pub.Stats(), "every SPUBLISH reached the subscriber")
}

// On a cluster each SPUBLISH goes to the node that owns its channel's slot,
// and to no other (no broadcast, no redirection); each channel keeps its
// order.
func TestShardedPublishGoesToTheOwningShardOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cluster := redistest.StartCluster(t, 3)
	nodes := cluster.Nodes()
	const topics, perTopic = 30, 12
	byNode, subs := subscribeAtOwners(t, cluster, "orders-%d", topics)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: cluster.NewClient(t), Sharded: true}, nil)
	require.NoError(t, err)
	defer pub.Close()

	testutil.Parallel(t, topics, topics, func(i int) error {
		topic := fmt.Sprintf("orders-%d", i)
		for j := 0; j < perTopic; j += 3 {
			if err := pub.Publish(topic, jsonMsg(j), jsonMsg(j+1), jsonMsg(j+2)); err != nil {
				return err
			}
		}
		return nil
	})

	for i, n := range nodes {
		next := make(map[string]int)
		for range len(byNode[i]) * perTopic {
			msg := receiveRaw(t, subs[i])
			require.Equal(t, next[msg.Channel], rawN(t, msg), "order of %s", msg.Channel)
			next[msg.Channel]++
		}
		require.EqualValues(t, len(byNode[i])*perTopic, commandCalls(t, n, "spublish"), "SPUBLISH at node %d", i)
		require.Zero(t, commandCalls(t, n, "publish"), "PUBLISH at node %d", i)
	}
	require.Equal(t, redispubsub.PublisherStats{Published: topics * perTopic}, pub.Stats(),
		"every SPUBLISH reached the subscriber at its channel's owner")
}

// Concurrent callers on shared channels, spread over the nodes: each
// channel's messages arrive in the order of their sequence stamps, which
// the Publisher gives in the order of the Publish calls.
func TestShardedPublishConcurrentCallersKeepEachChannelsOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cluster := redistest.StartCluster(t, 3)
	nodes := cluster.Nodes()
	const channels, callers, calls = 12, 8, 40
	byNode, subs := subscribeAtOwners(t, cluster, "c%d", channels)
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: cluster.NewClient(t), Sharded: true}, nil)
	require.NoError(t, err)
	defer pub.Close()

	sent := make([][channels]int, callers)
	testutil.Parallel(t, callers, callers, func(c int) error {
		rng := rand.New(rand.NewPCG(uint64(c), 7))
		for range calls {
			ch := rng.IntN(channels)
			msgs := make([]*message.Message, 1+rng.IntN(3))
			for k := range msgs {
				msgs[k] = jsonMsg(k)
			}
			if err := pub.Publish(fmt.Sprintf("c%d", ch), msgs...); err != nil {
				return err
			}
			sent[c][ch] += len(msgs)
		}
		return nil
	})

	for i := range nodes {
		want := 0
		for _, topic := range byNode[i] {
			ch, _ := strconv.Atoi(topic[1:])
			for c := range callers {
				want += sent[c][ch]
			}
		}
		last := make(map[string]uint64)
		for range want {
			msg := receiveRaw(t, subs[i])
			seq := rawSequence(t, msg)
			require.Equal(t, last[msg.Channel]+1, seq, "sequence on %s", msg.Channel)
			last[msg.Channel] = seq
		}
	}
	require.Zero(t, pub.Stats().Failed)
	require.Zero(t, pub.Stats().NoSubscribers)
}

// One batch in flight per node: a node that does not answer holds up the
// channels of that node only; another node's channel is published
// meanwhile. (In classic mode the second Publish would wait for the first.)
func TestShardedPublishNodesDoNotWaitForEachOther(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cluster := redistest.StartCluster(t, 3)
	stalled, free := topicOn(t, cluster, 0, ""), topicOn(t, cluster, 1, "")
	st := stallPublish(t, cluster, stalled)

	msg := jsonMsg(2)
	msg.SetContext(testutil.Context(t)) // in classic mode it would wait for node 0
	require.NoError(t, st.pub.Publish(free, msg), "node 1 is published while node 0 holds its batch")
	select {
	case err := <-st.result:
		t.Fatalf("the Publish to the paused node returned: %v", err)
	default:
	}
	st.unpause()
	require.NoError(t, testutil.Wait(t, st.result, "the stalled Publish"))
}

// subscribeAtOwners makes n topics from format and subscribes each, with a
// raw SSUBSCRIBE, at the node that owns it. It returns the topics and the
// subscription of each node, by node index.
func subscribeAtOwners(t *testing.T, cluster *redistest.Cluster, format string, n int) ([][]string, []*redis.PubSub) {
	t.Helper()
	nodes := cluster.Nodes()
	byNode := make([][]string, len(nodes))
	for i := range n {
		topic := fmt.Sprintf(format, i)
		owner := ownerIndex(t, cluster, topic)
		byNode[owner] = append(byNode[owner], topic)
	}
	subs := make([]*redis.PubSub, len(nodes))
	for i, node := range nodes {
		require.NotEmpty(t, byNode[i], "every node owns some of the topics")
		subs[i] = rawSSubscribe(t, node.Addr(), byNode[i]...)
	}
	return byNode, subs
}

// stalledPublish is a Publish of jsonMsg(1) that waits at the paused node
// 0 of a cluster.
type stalledPublish struct {
	client  *redis.ClusterClient   // with no read timeout
	pub     *redispubsub.Publisher // sharded, on client
	unpause func()                 // lets node 0 go on
	result  <-chan error           // the Publish's error
}

// stallPublish publishes jsonMsg(0) to topic, whose channel node 0 of
// cluster owns, then pauses node 0's writes and publishes jsonMsg(1), which
// waits there. The client has no read timeout: the batch waits for as long
// as the node does, as it would for a slow node within the timeout.
func stallPublish(t *testing.T, cluster *redistest.Cluster, topic string) stalledPublish {
	t.Helper()
	node := cluster.Nodes()[0]
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ReadTimeout: -1})
	t.Cleanup(func() { _ = client.Close() })
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, Sharded: true}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() }) // after unpause
	require.NoError(t, pub.Publish(topic, jsonMsg(0)), "slot map loaded, connections made")

	unpause := pauseWrites(t, node)
	result := publishAsync(pub, topic, jsonMsg(1))
	testutil.Eventually(t, func() bool { return infoField(t, node, "clients", "blocked_clients") == "1" },
		"the SPUBLISH to node 0 waits in Redis")
	return stalledPublish{client: client, pub: pub, unpause: unpause, result: result}
}

// pauseWrites holds srv's clients' write commands, SPUBLISH among them (it
// may replicate), until the returned function or the end of the test.
func pauseWrites(t *testing.T, srv *redistest.Server) (unpause func()) {
	t.Helper()
	srv.Do(t, "CLIENT", "PAUSE", "60000", "WRITE")
	var once sync.Once
	unpause = func() { once.Do(func() { srv.Do(t, "CLIENT", "UNPAUSE") }) }
	t.Cleanup(unpause)
	return unpause
}

// publishAsync publishes on a goroutine of its own; the channel gets the
// result.
func publishAsync(pub *redispubsub.Publisher, topic string, msgs ...*message.Message) <-chan error {
	result := make(chan error, 1)
	go func() { result <- pub.Publish(topic, msgs...) }()
	return result
}

// rawSSubscribe subscribes a raw go-redis client at addr to channels, one
// SSUBSCRIBE each (Redis refuses one that mixes slots), and waits for
// Redis's confirmations.
func rawSSubscribe(t *testing.T, addr string, channels ...string) *redis.PubSub {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr})
	ps := client.SSubscribe(context.Background())
	t.Cleanup(func() {
		_ = ps.Close()
		_ = client.Close()
	})
	ctx := testutil.Context(t)
	for _, ch := range channels {
		require.NoError(t, ps.SSubscribe(ctx, ch))
		reply, err := ps.Receive(ctx)
		require.NoError(t, err)
		require.IsType(t, &redis.Subscription{}, reply)
	}
	return ps
}

// receiveRaw reads the next message of ps, bounded by testutil.Timeout.
func receiveRaw(t *testing.T, ps *redis.PubSub) *redis.Message {
	t.Helper()
	msg, err := ps.ReceiveMessage(testutil.Context(t))
	require.NoError(t, err)
	return msg
}

// rawN decodes the {"n":i} payload of a message the Publisher sent.
func rawN(t *testing.T, raw *redis.Message) int {
	t.Helper()
	var n struct{ N int }
	require.NoError(t, json.Unmarshal(decodeRaw(t, raw).Payload, &n))
	return n.N
}

// rawSequence returns the sequence stamp of a message the Publisher sent.
func rawSequence(t *testing.T, raw *redis.Message) uint64 {
	t.Helper()
	seq, err := strconv.ParseUint(decodeRaw(t, raw).Metadata.Get(redispubsub.MetadataSequence), 10, 64)
	require.NoError(t, err)
	return seq
}

func decodeRaw(t *testing.T, raw *redis.Message) *message.Message {
	t.Helper()
	msg, err := redispubsub.JSONEnvelopeMarshaler{}.Unmarshal(raw.Channel, []byte(raw.Payload))
	require.NoError(t, err)
	return msg
}

var commandStatsLine = regexp.MustCompile(`(?m)^cmdstat_([a-z|]+):calls=(\d+),`)

// commandCalls returns how many times srv ran command, by INFO
// commandstats.
func commandCalls(t *testing.T, srv *redistest.Server, command string) int64 {
	t.Helper()
	for _, m := range commandStatsLine.FindAllStringSubmatch(srv.Do(t, "INFO", "commandstats").(string), -1) {
		if m[1] == command {
			n, err := strconv.ParseInt(m[2], 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

// infoField returns one field of an INFO section of srv.
func infoField(t *testing.T, srv *redistest.Server, section, field string) string {
	t.Helper()
	v, ok := infoValue(srv.Do(t, "INFO", section).(string), field)
	require.True(t, ok, "INFO %s has no %s", section, field)
	return v
}

// infoValue returns a field of INFO's or CLUSTER INFO's "field:value"
// lines.
func infoValue(info, field string) (string, bool) {
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == field {
			return v, true
		}
	}
	return "", false
}

// ownerIndex returns the index in cluster.Nodes() of the node that owns
// channel's slot (node i serves slots i*16384/n to (i+1)*16384/n-1).
func ownerIndex(t *testing.T, cluster *redistest.Cluster, channel string) int {
	t.Helper()
	nodes := cluster.Nodes()
	slot := int(nodes[0].Do(t, "CLUSTER", "KEYSLOT", channel).(int64))
	i := 0
	for slot > (i+1)*16384/len(nodes)-1 {
		i++
	}
	return i
}

// topicOn returns a topic whose channel, prefix+topic, the cluster node i
// owns.
func topicOn(t *testing.T, cluster *redistest.Cluster, i int, prefix string) string {
	t.Helper()
	for k := 0; ; k++ {
		if topic := fmt.Sprintf("on-%d-%d", i, k); ownerIndex(t, cluster, prefix+topic) == i {
			return topic
		}
	}
}

// A slot that moves to another node while a channel's batch waits at the
// old owner: the channel's next call waits for that batch rather than go
// straight to the new owner, and the messages arrive in order (go-redis
// follows the MOVED of the first batch).
func TestShardedPublishKeepsOrderAcrossASlotMove(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	cluster := redistest.StartCluster(t, 3)
	nodes := cluster.Nodes()
	topic := topicOn(t, cluster, 0, "")
	st := stallPublish(t, cluster, topic)

	// Move the (keyless) slot to node 1, and let go-redis know.
	slot := nodes[0].Do(t, "CLUSTER", "KEYSLOT", topic)
	id0, id1 := nodes[0].Do(t, "CLUSTER", "MYID"), nodes[1].Do(t, "CLUSTER", "MYID")
	nodes[1].Do(t, "CLUSTER", "SETSLOT", slot, "IMPORTING", id0)
	nodes[0].Do(t, "CLUSTER", "SETSLOT", slot, "MIGRATING", id1)
	for _, n := range nodes {
		n.Do(t, "CLUSTER", "SETSLOT", slot, "NODE", id1)
	}
	ps := rawSSubscribe(t, nodes[1].Addr(), topic)
	testutil.Eventually(t, func() bool {
		st.client.ReloadState(context.Background())
		master, err := st.client.MasterForKey(context.Background(), topic)
		return err == nil && master.Options().Addr == nodes[1].Addr()
	}, "go-redis sees the slot at node 1")

	second := publishAsync(st.pub, topic, jsonMsg(2))
	testutil.Eventually(t, func() bool { return redispubsub.PublisherQueued(st.pub) == 1 }, "the second call waits behind the first")
	st.unpause()
	require.NoError(t, testutil.Wait(t, st.result, "the stalled Publish"))
	require.NoError(t, testutil.Wait(t, second, "the second Publish"))
	require.Equal(t, 1, rawN(t, receiveRaw(t, ps)))
	require.Equal(t, 2, rawN(t, receiveRaw(t, ps)))
}
