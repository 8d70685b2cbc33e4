package redispubsub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	redispubsub "github.com/alkdev/watermill-redispubsub"
	"github.com/alkdev/watermill-redispubsub/internal/redistest"
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
	byNode := make([][]string, len(nodes))
	for i := range topics {
		topic := fmt.Sprintf("orders-%d", i)
		owner := ownerIndex(t, cluster, topic)
		byNode[owner] = append(byNode[owner], topic)
	}
	subs := make([]*redis.PubSub, len(nodes))
	for i, n := range nodes {
		require.NotEmpty(t, byNode[i], "every node owns some of the topics")
		subs[i] = rawSSubscribe(t, n.Addr(), byNode[i]...)
	}
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: cluster.NewClient(t), Sharded: true}, nil)
	require.NoError(t, err)
	defer pub.Close()

	errs := make(chan error, topics)
	var wg sync.WaitGroup
	for i := range topics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("orders-%d", i)
			for j := 0; j < perTopic; j += 3 {
				if err := pub.Publish(topic, jsonMsg(j), jsonMsg(j+1), jsonMsg(j+2)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

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
	byNode := make([][]string, len(nodes))
	for i := range channels {
		topic := fmt.Sprintf("c%d", i)
		owner := ownerIndex(t, cluster, topic)
		byNode[owner] = append(byNode[owner], topic)
	}
	subs := make([]*redis.PubSub, len(nodes))
	for i, n := range nodes {
		if len(byNode[i]) > 0 {
			subs[i] = rawSSubscribe(t, n.Addr(), byNode[i]...)
		}
	}
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: cluster.NewClient(t), Sharded: true}, nil)
	require.NoError(t, err)
	defer pub.Close()

	sent := make([][channels]int, callers)
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for range calls {
				ch := rng.IntN(channels)
				msgs := make([]*message.Message, 1+rng.IntN(3))
				for k := range msgs {
					msgs[k] = jsonMsg(k)
				}
				if err := pub.Publish(fmt.Sprintf("c%d", ch), msgs...); err != nil {
					errs <- err
					return
				}
				sent[c][ch] += len(msgs)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

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
	nodes := cluster.Nodes()
	stalled, free := topicOn(t, cluster, 0, ""), topicOn(t, cluster, 1, "")
	// No read timeout: the stalled pipeline waits for as long as the node
	// does, as it would for a slow node within the timeout.
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ReadTimeout: -1})
	defer client.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: client, Sharded: true}, nil)
	require.NoError(t, err)
	defer pub.Close()
	require.NoError(t, pub.Publish(stalled, jsonMsg(0)), "slot map loaded, connections made")

	nodes[0].Do(t, "CLIENT", "PAUSE", "60000", "WRITE") // SPUBLISH may replicate: it waits
	unpaused := false
	defer func() {
		if !unpaused {
			nodes[0].Do(t, "CLIENT", "UNPAUSE")
		}
	}()
	stalledErr := make(chan error, 1)
	go func() { stalledErr <- pub.Publish(stalled, jsonMsg(1)) }()
	eventually(t, func() bool { return infoField(t, nodes[0], "clients", "blocked_clients") == "1" },
		"the SPUBLISH to node 0 waits in Redis")

	msg := jsonMsg(2)
	msg.SetContext(waitCtx(t)) // in classic mode it would wait for node 0
	require.NoError(t, pub.Publish(free, msg), "node 1 is published while node 0 holds its batch")
	select {
	case err := <-stalledErr:
		t.Fatalf("the Publish to the paused node returned: %v", err)
	default:
	}
	nodes[0].Do(t, "CLIENT", "UNPAUSE")
	unpaused = true
	select {
	case err := <-stalledErr:
		require.NoError(t, err)
	case <-waitCtx(t).Done():
		t.Fatal("the Publish to node 0 did not return after CLIENT UNPAUSE")
	}
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
	ctx := waitCtx(t)
	for _, ch := range channels {
		require.NoError(t, ps.SSubscribe(ctx, ch))
		reply, err := ps.Receive(ctx)
		require.NoError(t, err)
		require.IsType(t, &redis.Subscription{}, reply)
	}
	return ps
}

// receiveRaw reads the next message of ps, bounded by waitTimeout.
func receiveRaw(t *testing.T, ps *redis.PubSub) *redis.Message {
	t.Helper()
	msg, err := ps.ReceiveMessage(waitCtx(t))
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

// waitCtx returns a context that ends after waitTimeout or with the test.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
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
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(field) + `:(\S*)`).FindStringSubmatch(srv.Do(t, "INFO", section).(string))
	require.NotNil(t, m, "INFO %s has no %s", section, field)
	return m[1]
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
