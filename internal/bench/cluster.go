package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSize is the payload size of the cluster case.
const clusterSize = 256

// clusterPublish is the cluster case: classic and sharded Pub/Sub side by
// side on Config.NewClusterClient's cluster.
var clusterPublish = &caseSpec{
	id:      "cluster-publish",
	size:    clusterSize,
	rounds:  true,
	cluster: true,
	systems: []string{sysRaw, sysAdapter},
	metrics: []metric{
		{name: "classic msg/s", unit: PerSecond, title: func(c Config) string {
			return clusterHead(c, "publish only") + ": classic PUBLISH (msg/s)"
		}},
		{name: "sharded msg/s", unit: PerSecond, title: func(c Config) string {
			return clusterHead(c, "publish only") + ": sharded SPUBLISH (msg/s)"
		}},
		{name: "sharded/classic", unit: Ratio, noRatio: true, quotient: &[2]int{1, 0}, title: func(Config) string {
			return "cluster, publish only: sharded / classic"
		}},
		{name: "e2e classic msg/s", unit: PerSecond, title: func(c Config) string {
			return clusterHead(c, "end to end") + ": classic (msg/s)"
		}},
		{name: "e2e sharded msg/s", unit: PerSecond, title: func(c Config) string {
			return clusterHead(c, "end to end") + ": sharded (msg/s)"
		}},
		{name: "e2e sharded/classic", unit: Ratio, noRatio: true, quotient: &[2]int{4, 3}, title: func(Config) string {
			return "cluster, end to end: sharded / classic"
		}},
		{name: "bus/msg classic", unit: Count, title: func(Config) string {
			return "cluster bus Pub/Sub messages per message: classic"
		}},
		{name: "bus/msg sharded", unit: Count, title: func(Config) string {
			return "cluster bus Pub/Sub messages per message: sharded"
		}},
	},
	note: func(c Config) string {
		return fmt.Sprintf("*cluster*: on a Redis Cluster (its shape is in the last line), %d goroutines publish single "+
			"messages, goroutine i to channel i mod %d. Classic: PUBLISH, sent to the node that owns the channel's slot "+
			"(the adapter: a Publisher on a ClusterClient; raw go-redis: PUBLISH with the channel as its key), which "+
			"Redis broadcasts to every other node over the cluster bus; sharded: SPUBLISH (PublisherConfig.Sharded), "+
			"which stays in the owner's shard. End to end: one Subscriber of every channel (classic: one connection; "+
			"sharded: SubscriberConfig.Sharded, a connection per node); raw go-redis: one PubSub, sharded one PubSub "+
			"per node and an SSUBSCRIBE per channel. Sharded / classic: the quotient of the two rows above it. Bus "+
			"messages: CLUSTER INFO cluster_stats_messages_publish_sent and _publishshard_sent summed over the nodes, "+
			"per message published; each measurement waits until the nodes received those of the one before. The "+
			"Subscriber's liveness probes are off here (ProbeInterval negative), so that their PUBLISHes do not count.",
			c.Publishers, c.ClusterChannels)
	},
	measureSystem: func(ctx context.Context, r *runner, s system, topic string, size int) ([]float64, error) {
		return r.measureCluster(ctx, s, topic, size)
	},
}

func clusterHead(c Config, what string) string {
	return fmt.Sprintf("cluster, %s, %d goroutines over %d channels", what, c.Publishers, c.ClusterChannels)
}

// NeedsCluster reports whether the cases selected (nil: all) include one
// that runs on a Redis Cluster (Config.NewClusterClient).
func NeedsCluster(caseIDs []string) bool {
	for _, spec := range cases {
		if spec.cluster && (caseIDs == nil || slices.Contains(caseIDs, spec.id)) {
			return true
		}
	}
	return false
}

// measureCluster measures s on the cluster: publishing only, classic then
// sharded, then end to end the same way, each on a system opened for it
// and channels of its own: a classic message reaches the other nodes over
// the cluster bus after PUBLISH returned, and must not arrive in the next
// measurement.
func (r *runner) measureCluster(ctx context.Context, s system, topic string, size int) ([]float64, error) {
	var rates [2][2]float64 // [publish only, end to end][classic, sharded]
	var bus [2]float64      // [classic, sharded], publishing only
	for e, phase := range []string{"publish only", "end to end"} {
		for m, mode := range []string{"classic", "sharded"} {
			topics := make([]string, r.cfg.ClusterChannels)
			for i := range topics {
				topics[i] = fmt.Sprintf("%s.%s.%d.%d", topic, mode, e, i)
			}
			rate, perMsg, err := r.clusterThroughput(ctx, s, m == 1, e == 1, topics, size)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", mode, phase, err)
			}
			rates[e][m] = rate
			if e == 0 {
				bus[m] = perMsg
			}
		}
	}
	return []float64{
		rates[0][0], rates[0][1], rates[0][1] / rates[0][0],
		rates[1][0], rates[1][1], rates[1][1] / rates[1][0],
		bus[0], bus[1],
	}, nil
}

// clusterThroughput measures the throughput of s on the cluster, classic
// or sharded, with single messages from Publishers goroutines, and counts
// the Pub/Sub messages it made the nodes send each other. It returns once
// the nodes received every one of those.
func (r *runner) clusterThroughput(ctx context.Context, s system, sharded, consume bool, topics []string, size int) (rate, busPerMsg float64, err error) {
	newClient := func() redis.UniversalClient { return r.cfg.NewClusterClient() }
	// Probes off: their PUBLISH (one per connection every 5 s) would count
	// in the bus messages per message published.
	t, err := s.open(r.cfg, target{newClient: newClient, sharded: sharded, probeInterval: -1})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = t.close() }()
	before, err := busMessages(ctx, r.cluster)
	if err != nil {
		return 0, 0, err
	}
	res, err := r.throughput(ctx, t, topics, size, r.cfg.Publishers, 1, consume)
	if err != nil {
		return 0, 0, err
	}
	after, err := r.busSettled(ctx)
	if err != nil {
		return 0, 0, err
	}
	return res.rate, float64(after.sent-before.sent) / float64(res.sent), nil
}

// busCount is the sum, over the cluster's nodes, of the Pub/Sub messages
// they sent each other over the cluster bus, and of those they received.
type busCount struct{ sent, received int64 }

// busSettled waits, at most StallTimeout, until the nodes received every
// Pub/Sub message sent over the cluster bus (a classic PUBLISH reaches the
// other nodes after it returned), and returns the count.
func (r *runner) busSettled(ctx context.Context) (busCount, error) {
	deadline := time.Now().Add(r.cfg.StallTimeout)
	for {
		c, err := busMessages(ctx, r.cluster)
		if err != nil || c.received == c.sent {
			return c, err
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("the cluster bus did not deliver within %v: %d Pub/Sub messages sent, %d received", r.cfg.StallTimeout, c.sent, c.received)
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// busMessages counts the Pub/Sub messages of the cluster bus: CLUSTER INFO
// cluster_stats_messages_publish_sent and _publishshard_sent (and
// _received), each absent until its first message. Redis counts a message
// sent as it queues it, in the command that publishes.
func busMessages(ctx context.Context, c *redis.ClusterClient) (busCount, error) {
	var sent, received atomic.Int64
	err := c.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		info, err := node.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", node.Options().Addr, err)
		}
		for _, kind := range []string{"publish", "publishshard"} {
			s, err1 := infoCount(info, "cluster_stats_messages_"+kind+"_sent")
			r, err2 := infoCount(info, "cluster_stats_messages_"+kind+"_received")
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("%s: CLUSTER INFO: %w", node.Options().Addr, err)
			}
			sent.Add(s)
			received.Add(r)
		}
		return nil
	})
	return busCount{sent: sent.Load(), received: received.Load()}, err
}

// infoCount returns the number of field in an INFO reply; 0 when absent.
func infoCount(info, field string) (int64, error) {
	v, ok := infoField(info, field)
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return n, nil
}

// clusterShape describes the cluster: "3 masters, 0 replicas".
func clusterShape(ctx context.Context, c *redis.ClusterClient) (string, error) {
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("CLUSTER SHARDS: %w", err)
	}
	var masters, replicas int
	for _, shard := range shards {
		for _, node := range shard.Nodes {
			if node.Role == "master" {
				masters++
			} else {
				replicas++
			}
		}
	}
	return fmt.Sprintf("%d masters, %d replicas", masters, replicas), nil
}
