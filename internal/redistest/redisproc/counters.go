package redisproc

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Info runs INFO section on the server and returns its fields, for
// example Info(ctx, "stats")["pubsubshard_channels"].
func (s *Server) Info(ctx context.Context, section string) (map[string]string, error) {
	return s.infoReply(ctx, "INFO", section)
}

// ClusterInfo runs CLUSTER INFO on a cluster node and returns its fields,
// for example ClusterInfo(ctx)["cluster_stats_messages_publish_received"].
func (s *Server) ClusterInfo(ctx context.Context) (map[string]string, error) {
	return s.infoReply(ctx, "CLUSTER", "INFO")
}

func (s *Server) infoReply(ctx context.Context, args ...any) (map[string]string, error) {
	v, err := s.Do(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("redisproc: %s: %v: %w", s.Addr(), args, err)
	}
	str, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("redisproc: %s: %v: unexpected reply %#v", s.Addr(), args, v)
	}
	return ParseInfo(str), nil
}

// PubSubCounters are one server's counts of Pub/Sub traffic since it
// started (CONFIG RESETSTAT resets the first two, not the bus counters):
// compare two readings.
type PubSubCounters struct {
	Addr string
	// Publish and SPublish are the PUBLISH and SPUBLISH commands that
	// clients ran on this server (calls in INFO commandstats).
	Publish, SPublish int64
	// BusPublishSent and BusPublishReceived count the cluster bus messages
	// that carry a classic PUBLISH to other nodes, which go to every node
	// (CLUSTER INFO cluster_stats_messages_publish_sent, _received); zero
	// outside a cluster.
	BusPublishSent, BusPublishReceived int64
	// BusShardSent and BusShardReceived count those that carry an
	// SPUBLISH, which go to the replicas of the shard only
	// (cluster_stats_messages_publishshard_sent, _received).
	BusShardSent, BusShardReceived int64
}

// PubSubCounters reads the server's PubSubCounters.
func (s *Server) PubSubCounters(ctx context.Context) (PubSubCounters, error) {
	c := PubSubCounters{Addr: s.Addr()}
	cmds, err := s.Info(ctx, "commandstats")
	if err != nil {
		return c, err
	}
	c.Publish = commandCalls(cmds["cmdstat_publish"])
	c.SPublish = commandCalls(cmds["cmdstat_spublish"])
	if !s.cluster {
		return c, nil
	}
	ci, err := s.ClusterInfo(ctx)
	if err != nil {
		return c, err
	}
	n := func(k string) int64 {
		v, _ := strconv.ParseInt(ci[k], 10, 64) // absent until the first such message: 0
		return v
	}
	c.BusPublishSent = n("cluster_stats_messages_publish_sent")
	c.BusPublishReceived = n("cluster_stats_messages_publish_received")
	c.BusShardSent = n("cluster_stats_messages_publishshard_sent")
	c.BusShardReceived = n("cluster_stats_messages_publishshard_received")
	return c, nil
}

// commandCalls returns the calls of an INFO commandstats value,
// "calls=3,usec=...", or 0.
func commandCalls(stat string) int64 {
	for _, kv := range strings.Split(stat, ",") {
		if v, ok := strings.CutPrefix(kv, "calls="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// PubSubCounters reads the PubSubCounters of every node, in the order of
// Nodes; a node that is not running has only its Addr set.
func (c *Cluster) PubSubCounters(ctx context.Context) ([]PubSubCounters, error) {
	out := make([]PubSubCounters, len(c.nodes))
	for i, n := range c.nodes {
		out[i].Addr = n.Addr()
		if !n.Running() {
			continue
		}
		pc, err := n.PubSubCounters(ctx)
		if err != nil {
			return nil, err
		}
		out[i] = pc
	}
	return out, nil
}
